-- How the calls a flow group serves reach the daemon (keypress_ari/flows/modes.py): stasis
-- (the Stasis app), fastagi (a features.conf applicationmap entry runs our FastAGI server),
-- ami (no dialplan change: AMI events and actions).
-- Existing groups keep what they had: stasis only.
ALTER TABLE flow_groups
    ADD COLUMN modes text[] NOT NULL DEFAULT '{stasis}'
    CONSTRAINT flow_groups_modes_known CHECK (
        cardinality(modes) > 0 AND modes <@ ARRAY['stasis', 'fastagi', 'ami']::text[]
    );
