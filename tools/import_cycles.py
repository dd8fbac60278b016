#!/usr/bin/env python3
"""Import cycles between berth's source files: a module refers to another by `crate::X` (or
`super::X` inside a module directory); prints the strongly connected components of more than
one module. Usage: tools/import_cycles.py [REPO_ROOT]. Used for issue 14's measurements."""
import re,glob,sys,os
root=sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..')
files=[f for f in glob.glob(root+'/src/**/*.rs',recursive=True)]
def mod_of(f):
    r=os.path.relpath(f,root+'/src')[:-3]
    if r.endswith('/mod'): r=r[:-4]
    if r in ('lib','main'): return r
    return r.replace('/','::')
mods={mod_of(f):f for f in files}
edges={m:set() for m in mods}
for m,f in mods.items():
    s=open(f).read()
    for ref in re.findall(r'crate::((?:\w+::)*\w+)',s):
        parts=ref.split('::')
        for i in range(len(parts),0,-1):
            c='::'.join(parts[:i])
            if c in mods and c!=m: edges[m].add(c); break
    # super:: in commands
    if '::' in m:
        parent=m.rsplit('::',1)[0]
        for ref in re.findall(r'\bsuper::(?!super::)(\w+)',s):
            c=parent+'::'+ref
            if c in mods: edges[m].add(c)
            elif parent in mods: edges[m].add(parent)
    # grouped imports: `use super::{a::x, b}` and `use crate::{a, b::y}`
    for base,group in re.findall(r'\buse\s+(super|crate)::\{([^}]*)\}',s):
        for item in re.findall(r'(\w+)(?:::|\s*[,}]|\s*$)',group+','):
            if base=='crate':
                c=item
            else:
                if '::' not in m: continue
                c=m.rsplit('::',1)[0]+'::'+item
                if c not in mods: c=m.rsplit('::',1)[0]
            if c in mods and c!=m: edges[m].add(c)
    # `super::super::x` is the grandparent's
    for ref in re.findall(r'\bsuper::super::(\w+)',s):
        parts=m.split('::')
        if len(parts)>=2:
            gp='::'.join(parts[:-2])
            c=(gp+'::'+ref) if gp else ref
            if c in mods: edges[m].add(c)
    # a parent's relative paths to its children anywhere in its text (`apps::create(…)`)
    prefix='' if m in ('lib','main') else m+'::'
    for ref in set(re.findall(r'(?<![\w:])(\w+)::',s)):
        c=prefix+ref
        if c in mods and c!=m and c.count('::')==prefix.count('::'): edges[m].add(c)
    # a parent's own paths to its children: `use child::…`, `pub use child::…` (a child's items
    # re-exported by the parent are the parent's dependency on it)
    for ref in re.findall(r'^\s*(?:pub(?:\([\w:]+\))?\s+)?use\s+\{?\s*(\w+)::',s,re.M):
        c=(m+'::'+ref) if m not in ('lib','main') else ref
        if c in mods and c!=m: edges[m].add(c)
# tarjan
idx={};low={};st=[];on=set();res=[];n=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=n[0];n[0]+=1;st.append(v);on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        res.append(comp)
for v in mods:
    if v not in idx: sc(v)
cyc=[c for c in res if len(c)>1]
print(len(mods),'files; cycles:',[len(c) for c in cyc])
for c in cyc: print(sorted(c))
# The same graph with every module folded into its top-level module (`ops::deploy` → `ops`):
# cycles between top-level modules, the hub the house review measured.
top=lambda x: x.split('::')[0]
tedges={}
for v,ws in edges.items():
    tedges.setdefault(top(v),set()).update(top(w) for w in ws if top(w)!=top(v))
idx.clear();low.clear();st.clear();on.clear();res.clear();n[0]=0
edges=tedges
for v in tedges:
    if v not in idx: sc(v)
tcyc=[c for c in res if len(c)>1]
print(len(tedges),'top-level modules; cycles:',[len(c) for c in tcyc])
for c in tcyc: print(sorted(c))
