-- App states and release statuses are enums now (src/domain.rs): a name none of them has
-- would fail every read of its row. Every name berth ever wrote is one of them; anything else
-- (a hand edit) becomes the state the reconciler looks at again, or a failed release.
UPDATE apps SET state = 'unknown'
 WHERE state NOT IN ('created', 'building', 'deploying', 'running', 'failed', 'unknown', 'lost',
                     'restarting', 'rolling_back', 'scaling', 'starting', 'stopping', 'stopped',
                     'deleting');
UPDATE releases SET status = 'failed'
 WHERE status NOT IN ('releasing', 'deploying', 'running', 'superseded', 'failed', 'canary',
                      'aborted');
