-- Webhooks: endpoints, and a transactional outbox of deliveries.
-- Every transition, however it is written (one audit row at a time or a batch of them), reaches
-- the outbox through one trigger on the audit trail, in the transition's own transaction: a
-- delivery exists exactly when its transition committed, and nothing is lost when a process dies.

CREATE TABLE webhook_endpoints (
    id          uuid PRIMARY KEY,
    url         text        NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
    -- Needed to sign each delivery, so kept as it was issued (shown to the admin only once).
    secret      text        NOT NULL,
    -- Event names (domain/states.py's Event) this endpoint wants; NULL: every event.
    events      text[],
    -- 'api': registered with createWebhookEndpoint; 'settings': listed in SLOTENGINE_WEBHOOK_ENDPOINTS.
    source      text        NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'settings')),
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX webhook_endpoints_active ON webhook_endpoints (created_at) WHERE deleted_at IS NULL;

CREATE TABLE webhook_deliveries (
    -- Issued under the slot's lock, so a slot's deliveries to an endpoint sort in commit order.
    id               bigserial   PRIMARY KEY,
    -- The Standard Webhooks message id (webhook-id): the same on every attempt and replay.
    message_id       uuid        NOT NULL DEFAULT gen_random_uuid(),
    endpoint_id      uuid        NOT NULL REFERENCES webhook_endpoints (id),
    transition_id    bigint      NOT NULL REFERENCES transitions (id),
    slot_id          uuid        NOT NULL,
    -- The slot's version once the transition's transaction committed (set at commit).
    slot_version     bigint,
    status           text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- A worker sending this delivery owns it until then (one attempt at a time per chain).
    lease_until      timestamptz,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
-- The head of each (endpoint, slot) chain: deliveries are sent in this order, one at a time.
CREATE INDEX webhook_deliveries_chain ON webhook_deliveries (endpoint_id, slot_id, id)
    WHERE status = 'pending';
CREATE UNIQUE INDEX webhook_deliveries_message ON webhook_deliveries (message_id);
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, id);
CREATE INDEX webhook_deliveries_unversioned ON webhook_deliveries (slot_id) WHERE slot_version IS NULL;

-- One statement-level trigger per audit INSERT, whatever the number of rows the statement wrote.
-- It is enabled only while an endpoint is registered (see webhook_endpoints_changed below): with
-- none, PostgreSQL skips it and the audit trail costs what it cost before webhooks.
CREATE FUNCTION transitions_to_webhooks() RETURNS trigger AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE deleted_at IS NULL) THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (endpoint_id, transition_id, slot_id)
    SELECT e.id, t.id, b.slot_id
    FROM new_transitions t
    JOIN bookings b ON b.id = t.booking_id
    JOIN webhook_endpoints e ON e.deleted_at IS NULL AND (e.events IS NULL OR t.event = ANY (e.events))
    ORDER BY t.id, e.id;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER transitions_to_webhooks AFTER INSERT ON transitions
    REFERENCING NEW TABLE AS new_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION transitions_to_webhooks();

-- The slot's version is bumped after (or with) the audit rows; read it at commit, when it is final.
-- Fires only for deliveries, so only when an endpoint is registered.
CREATE FUNCTION webhook_deliveries_slot_version() RETURNS trigger AS $$
BEGIN
    UPDATE webhook_deliveries d SET slot_version = s.version
    FROM slots s
    WHERE s.id = NEW.slot_id AND d.slot_id = NEW.slot_id AND d.slot_version IS NULL;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
CREATE CONSTRAINT TRIGGER webhook_deliveries_slot_version AFTER INSERT ON webhook_deliveries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION webhook_deliveries_slot_version();

-- Enable the audit trail's trigger exactly while an endpoint is active. Called by every change to
-- webhook_endpoints, in its transaction, after LOCK TABLE webhook_endpoints IN SHARE ROW EXCLUSIVE
-- MODE (changes to endpoints run one at a time, so each sees the others'). The ALTER waits for
-- transactions writing audit rows and holds new ones until commit: a transition commits either
-- before the endpoint exists, or after, with its delivery.
CREATE FUNCTION webhook_endpoints_changed() RETURNS void AS $$
DECLARE
    wanted  boolean := EXISTS (SELECT 1 FROM webhook_endpoints WHERE deleted_at IS NULL);
    enabled boolean;
BEGIN
    SELECT tgenabled <> 'D' INTO enabled FROM pg_trigger
    WHERE tgrelid = 'transitions'::regclass AND tgname = 'transitions_to_webhooks';
    IF wanted AND NOT enabled THEN
        ALTER TABLE transitions ENABLE TRIGGER transitions_to_webhooks;
    ELSIF enabled AND NOT wanted THEN
        ALTER TABLE transitions DISABLE TRIGGER transitions_to_webhooks;
    END IF;
END
$$ LANGUAGE plpgsql;
ALTER TABLE transitions DISABLE TRIGGER transitions_to_webhooks;
