-- templates:approve: the git tree ids of `.berth/templates/` that an admin approved for an app.
-- A repo's templates are used only when the tree at the release's commit is one of these, so a
-- later push that changes them is not applied until an admin looks again.
CREATE TABLE template_approvals (
    app_id      INTEGER NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    tree        TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    PRIMARY KEY (app_id, tree)
);
