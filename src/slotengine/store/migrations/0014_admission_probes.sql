-- admit_reservations() (0013) with its answers' known bookings read by a probe of bookings_pkey
-- each, never by a join. The function runs on generic plans, made once per connection: one made
-- while `bookings` was nearly empty hashed a seq scan of the whole table against the answers, and
-- kept doing so as the table grew (every reserve read every booking; many-slots throughput fell
-- round after round). A LATERAL subquery with LIMIT is never flattened into a join, so its only
-- plans are per-row probes, and the index probe is the cheaper one at any table size.
CREATE OR REPLACE FUNCTION admit_reservations(
    p_slot        uuid,
    p_holders     text[],
    p_keys        text[],
    p_held        text,    -- transition(None, HOLD): a new booking that holds a unit
    p_queued      text,    -- transition(None, QUEUE): a new booking that waits
    p_hold_event  text,
    p_queue_event text,
    p_cap         integer  -- live claims a holder may have on other slots (0 = no cap)
) RETURNS TABLE (
    ord            integer,
    outcome        text,
    id             uuid,
    slot_id        uuid,
    holder         text,
    state          text,
    unit           integer,
    fence          bigint,
    queue_seq      bigint,
    expires_at     timestamptz,
    created_at     timestamptz,
    place          integer,
    capacity       integer,
    hold_seconds   integer,
    closed         boolean,
    starts_at      timestamptz,
    ends_at        timestamptz,
    db_now         timestamptz,
    locked_version bigint,
    version        bigint,
    waiting        integer,
    group_id       uuid,    -- the booking's group (0010), for 'row' and 'replay'; new ones have none
    units          integer  -- the units the booking takes (new ones: 1)
) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_slot    slots%ROWTYPE;
    v_taken   integer[];
    v_lapsed  boolean;  -- a hold past its expiry, not yet expired
    v_accepts boolean;
    v_free    integer[] := '{}';
    v_room    integer := 0;  -- holds this batch may give
BEGIN
    SELECT * INTO v_slot FROM slots WHERE slots.id = p_slot FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- One scan of the slot's occupying bookings and one of their units (both bounded by its
    -- capacity, whatever its queue's length): a booking may own several units (0013).
    SELECT coalesce(bool_or(b.state = p_held AND b.expires_at <= now()), false)
      INTO v_lapsed
      FROM bookings b WHERE b.slot_id = p_slot AND b.unit IS NOT NULL;
    SELECT coalesce(array_agg(o.unit), '{}') INTO v_taken FROM booking_units o WHERE o.slot_id = p_slot;
    -- settled_already(), negated: settle first when a hold lapsed, or people wait for a slot that
    -- started or for a unit that is free.
    IF v_lapsed OR (v_slot.waiting > 0 AND (
        now() >= v_slot.starts_at
        OR (SELECT count(*) FROM unnest(v_taken) AS t (u) WHERE t.u <= v_slot.capacity) < v_slot.capacity
    )) THEN
        RETURN QUERY SELECT 0, 'due'::text, NULL::uuid, NULL::uuid, NULL::text, NULL::text,
            NULL::integer, NULL::bigint, NULL::bigint, NULL::timestamptz, NULL::timestamptz,
            NULL::integer, v_slot.capacity, v_slot.hold_seconds, v_slot.closed, v_slot.starts_at,
            v_slot.ends_at, now(), v_slot.version, v_slot.version, v_slot.waiting, NULL::uuid,
            NULL::integer;
        RETURN;
    END IF;
    -- accepts_reservations(): not closed, not started.
    v_accepts := NOT v_slot.closed AND now() < v_slot.starts_at;
    -- admit(): a newcomer holds only while a unit is free and nobody waits (FIFO beats speed);
    -- free_units(): the lowest free unit numbers first.
    IF v_accepts AND v_slot.waiting = 0 THEN
        v_free := ARRAY(
            SELECT g.u FROM generate_series(1, v_slot.capacity) AS g (u)
            WHERE NOT EXISTS (SELECT 1 FROM unnest(v_taken) AS t (u) WHERE t.u = g.u)
            ORDER BY g.u LIMIT cardinality(p_holders));
        v_room := least(cardinality(v_free), v_slot.capacity - cardinality(v_taken));
    END IF;

    RETURN QUERY
    WITH request AS (
        SELECT r.n::integer AS n, r.holder, r.key
        FROM unnest(p_holders, p_keys) WITH ORDINALITY AS r (holder, key, n)
    ),
    looked AS (
        SELECT q.n, q.holder, q.key, k.slot_id AS key_slot, k.booking_id AS known_id, l.id AS live_id,
               row_number() OVER (PARTITION BY q.holder, q.key ORDER BY q.n) AS key_nth,
               p_cap > 0 AND c.n >= p_cap AS capped
        -- One index probe per request (never a scan of the slot's queue or of every key).
        FROM request q
        LEFT JOIN LATERAL (
            SELECT i.slot_id, i.booking_id FROM idempotency_keys i
            WHERE i.holder = q.holder AND i.key = q.key LIMIT 1
        ) AS k ON true
        LEFT JOIN LATERAL (
            SELECT b.id FROM bookings b
            -- LIVE_STATES (bookings_one_live_per_holder)
            WHERE b.slot_id = p_slot AND b.holder = q.holder
              AND b.state IN ('PENDING', 'RESERVED', 'CONFIRMED') LIMIT 1
        ) AS l ON true
        LEFT JOIN LATERAL (  -- the holder's live holds and waits elsewhere (a dead hold is none)
            SELECT count(*) AS n FROM bookings c
            -- CLAIMING_STATES (bookings_holder_claims)
            WHERE p_cap > 0 AND c.holder = q.holder AND c.slot_id <> p_slot
              AND c.state IN ('PENDING', 'RESERVED') AND (c.state <> p_held OR c.expires_at > now())
        ) AS c ON true
    ),
    -- One new booking per holder with neither a known key nor a live booking: its first request's.
    newcomer AS (
        SELECT DISTINCT ON (lk.holder) lk.holder, lk.key, lk.n FROM looked lk
        WHERE lk.known_id IS NULL AND lk.live_id IS NULL AND NOT lk.capped AND v_accepts
        ORDER BY lk.holder, lk.n
    ),
    admitted AS (
        SELECT c.holder, c.key, c.k, gen_random_uuid() AS id, c.k <= v_room AS holds
        FROM (SELECT nc.holder, nc.key, row_number() OVER (ORDER BY nc.n)::integer AS k
              FROM newcomer nc) AS c
    ),
    slot AS (
        UPDATE slots
           SET fence = slots.fence + (SELECT count(*) FROM admitted a WHERE a.holds),
               version = slots.version + 1,
               waiting = slots.waiting + (SELECT count(*) FROM admitted a WHERE NOT a.holds)
         WHERE slots.id = p_slot AND EXISTS (SELECT 1 FROM admitted)
        RETURNING slots.version, slots.waiting
    ),
    booking AS (
        INSERT INTO bookings (id, slot_id, holder, state, unit, fence, expires_at, idempotency_key)
        SELECT a.id, p_slot, a.holder,
               CASE WHEN a.holds THEN p_held ELSE p_queued END,
               CASE WHEN a.holds THEN v_free[a.k] END,
               -- The holds are the first of the batch: hold k gets the slot's fence + k.
               CASE WHEN a.holds THEN v_slot.fence + a.k END,
               -- hold_expiry(): after the hold's TTL, never after the slot's end.
               CASE WHEN a.holds THEN least(now() + make_interval(secs => v_slot.hold_seconds),
                                            v_slot.ends_at) END,
               a.key
        FROM admitted a ORDER BY a.k  -- queue_seq follows admission order
        RETURNING bookings.*
    ),
    audit AS (
        -- At the slot version this statement commits (the `slot` CTE bumps it once): a resuming
        -- subscription replays the trail by (slot_id, slot_version), 0009.
        INSERT INTO transitions (booking_id, from_state, to_state, event, actor, fence, slot_id, slot_version)
        SELECT b.id, NULL, b.state, CASE WHEN b.unit IS NOT NULL THEN p_hold_event ELSE p_queue_event END,
               b.holder, b.fence, p_slot, v_slot.version + 1
        FROM booking b ORDER BY b.queue_seq  -- in admission order: the trail replays
    ),
    written AS (
        INSERT INTO idempotency_keys (holder, key, slot_id, booking_id)
        SELECT DISTINCT ON (lk.holder, lk.key) lk.holder, lk.key, p_slot, coalesce(lk.live_id, a.id)
        FROM looked lk LEFT JOIN admitted a ON a.holder = lk.holder
        WHERE lk.known_id IS NULL AND NOT lk.capped AND (lk.live_id IS NOT NULL OR a.id IS NOT NULL)
        ORDER BY lk.holder, lk.key, lk.n
    )
    SELECT lk.n,
           CASE WHEN lk.capped THEN 'capped'
                WHEN lk.known_id IS NOT NULL THEN
                    CASE WHEN lk.key_slot = p_slot THEN 'replay' ELSE 'reused' END
                WHEN lk.live_id IS NOT NULL THEN CASE WHEN lk.key_nth = 1 THEN 'row' ELSE 'replay' END
                WHEN a.id IS NOT NULL THEN 'new'
                ELSE 'refused' END,
           coalesce(nb.id, ob.id), coalesce(nb.slot_id, ob.slot_id), coalesce(nb.holder, ob.holder),
           coalesce(nb.state, ob.state), coalesce(nb.unit, ob.unit), coalesce(nb.fence, ob.fence),
           coalesce(nb.queue_seq, ob.queue_seq), coalesce(nb.expires_at, ob.expires_at),
           coalesce(nb.created_at, ob.created_at),
           CASE WHEN a.id IS NOT NULL AND NOT a.holds THEN v_slot.waiting + a.k - v_room END,
           NULL::integer, NULL::integer, NULL::boolean, NULL::timestamptz, NULL::timestamptz,
           NULL::timestamptz, NULL::bigint, NULL::bigint, NULL::integer, coalesce(nb.group_id, ob.group_id),
           coalesce(nb.units, ob.units)
    FROM looked lk
    LEFT JOIN admitted a
        ON a.holder = lk.holder AND lk.known_id IS NULL AND lk.live_id IS NULL AND NOT lk.capped
    LEFT JOIN booking nb ON nb.id = a.id
    -- A probe per answer, never a join the planner may hash: see this migration's header.
    LEFT JOIN LATERAL (
        SELECT * FROM bookings x WHERE x.id = coalesce(lk.known_id, lk.live_id) LIMIT 1
    ) AS ob ON true
    UNION ALL
    SELECT 0, 'slot', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           v_slot.capacity, v_slot.hold_seconds, v_slot.closed, v_slot.starts_at, v_slot.ends_at,
           now(), v_slot.version, coalesce((SELECT s.version FROM slot s), v_slot.version),
           coalesce((SELECT s.waiting FROM slot s), v_slot.waiting), NULL::uuid, NULL::integer;
END
$$;
