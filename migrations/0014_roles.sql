-- Key roles are an enum now (src/domain.rs): any other name (a hand edit) becomes the least
-- privileged role instead of failing every read of the keys table.
UPDATE keys SET role = 'member' WHERE role NOT IN ('admin', 'member');
