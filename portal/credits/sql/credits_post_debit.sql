-- The commonest posting, a holder paying a system account out of the lots that expire first, as
-- one flat function with the shortest possible hold on the holder's row lock. Does what
-- credits_post does for the postings [holder -amount, system +amount] and returns rows of the
-- same shape; raises NC001 and NC002 like credits_apply_postings.
--
-- On a busy account every debit waits for the one before it to commit, so what runs between the
-- balance UPDATE (which takes the row lock) and the commit decides how many debits one account
-- can take. Here the transaction row and the system leg are written before the lock; under it
-- run only the balance UPDATE, one statement that draws the lots and writes the holder's legs,
-- and the holder's roll-ups (credits_rollup_add). Keep the column lists in step with
-- LedgerTransaction and LedgerEntry.
CREATE OR REPLACE FUNCTION credits_post_debit(
    p_public_id uuid,
    p_key character varying,
    p_kind character varying,
    p_description character varying,
    p_metadata jsonb,
    p_created_by bigint,
    p_at timestamp with time zone,
    p_holder bigint,
    p_system bigint,
    p_amount bigint
)
RETURNS TABLE (transaction_id bigint, grant_id bigint, remaining bigint, amount bigint)
LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
DECLARE
    v_transaction bigint;
    v_taken bigint;
    v_ids bigint[];
    v_remaining bigint[];
    v_amounts bigint[];
    v_rates numeric[];
    v_takes bigint[];
    v_lot record;
BEGIN
    INSERT INTO credits_ledgertransaction
        (public_id, idempotency_key, kind, description, metadata, created_by_id, created_at)
    VALUES (p_public_id, p_key, p_kind, p_description, p_metadata, p_created_by, p_at)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id INTO v_transaction;
    IF v_transaction IS NULL THEN
        -- The key was posted before: one row with no transaction tells the caller to replay.
        RETURN NEXT;
        RETURN;
    END IF;

    -- The system leg, before any lock: it names an existing system account or nothing is
    -- written.
    INSERT INTO credits_ledgerentry (transaction_id, account_id, grant_id, amount, kind, created_at)
    SELECT v_transaction, a.id, NULL, p_amount, p_kind, p_at
    FROM credits_creditaccount a WHERE a.id = p_system AND a.kind = 'system';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown account' USING ERRCODE = 'NC002';
    END IF;

    -- The holder's balance: the UPDATE takes the row lock and refuses to go below zero.
    UPDATE credits_creditaccount SET balance = balance - p_amount
    WHERE id = p_holder AND kind <> 'system' AND balance >= p_amount;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM credits_creditaccount WHERE id = p_holder AND kind <> 'system') THEN
            RAISE EXCEPTION 'not enough credits' USING ERRCODE = 'NC001';
        END IF;
        RAISE EXCEPTION 'unknown account' USING ERRCODE = 'NC002';
    END IF;

    -- The lots that expire first, read after the lock was granted (each statement's snapshot
    -- is taken when it starts, so it sees every earlier debit's commit). Expired lots are never
    -- drawn, even before the expiry job has moved them out of the balance. Nearly always the
    -- first lot covers the whole debit: one row found by index, no window over the others.
    WITH first_lot AS (
        SELECT g.id FROM credits_creditgrant g
        WHERE g.account_id = p_holder AND g.remaining > 0 AND g.expires_at > p_at
        ORDER BY g.expires_at, g.id
        LIMIT 1
    ),
    taken AS (
        UPDATE credits_creditgrant g SET remaining = g.remaining - p_amount
        FROM first_lot f WHERE g.id = f.id AND g.remaining >= p_amount
        RETURNING g.id, g.remaining, g.amount, g.rate_pkr_per_gpu_hour
    ),
    written AS (
        INSERT INTO credits_ledgerentry (transaction_id, account_id, grant_id, amount, kind, created_at)
        SELECT v_transaction, p_holder, t.id, -p_amount, p_kind, p_at FROM taken t
    )
    SELECT t.id, t.remaining, t.amount, t.rate_pkr_per_gpu_hour INTO v_lot FROM taken t;
    IF FOUND THEN
        PERFORM credits_rollup_add(
            p_kind, p_at, ARRAY[p_holder], ARRAY[v_lot.rate_pkr_per_gpu_hour], ARRAY[-p_amount]
        );
        transaction_id := v_transaction;
        RETURN NEXT;
        grant_id := v_lot.id;
        remaining := v_lot.remaining;
        amount := v_lot.amount;
        RETURN NEXT;
        RETURN;
    END IF;

    -- Otherwise the debit runs over several lots, in the order they expire.
    WITH open_lots AS (
        SELECT g.id, g.remaining,
               sum(g.remaining) OVER (ORDER BY g.expires_at, g.id) - g.remaining AS before,
               row_number() OVER (ORDER BY g.expires_at, g.id) AS ord
        FROM credits_creditgrant g
        WHERE g.account_id = p_holder AND g.remaining > 0 AND g.expires_at > p_at
    ),
    draws AS (
        SELECT id, ord, least(remaining, p_amount - before) AS take
        FROM open_lots WHERE before < p_amount
    ),
    taken AS (
        UPDATE credits_creditgrant g SET remaining = g.remaining - d.take
        FROM draws d WHERE g.id = d.id
        RETURNING g.id, g.remaining, g.amount, g.rate_pkr_per_gpu_hour, d.take, d.ord
    ),
    written AS (
        INSERT INTO credits_ledgerentry (transaction_id, account_id, grant_id, amount, kind, created_at)
        SELECT v_transaction, p_holder, t.id, -t.take, p_kind, p_at FROM taken t ORDER BY t.ord
    )
    SELECT coalesce(sum(t.take), 0), array_agg(t.id ORDER BY t.ord),
           array_agg(t.remaining ORDER BY t.ord), array_agg(t.amount ORDER BY t.ord),
           array_agg(t.rate_pkr_per_gpu_hour), array_agg(-t.take)
    INTO v_taken, v_ids, v_remaining, v_amounts, v_rates, v_takes
    FROM taken t;
    IF v_taken < p_amount THEN
        RAISE EXCEPTION 'not enough credits' USING ERRCODE = 'NC001';
    END IF;
    PERFORM credits_rollup_add(
        p_kind, p_at, array_fill(p_holder, ARRAY[cardinality(v_takes)]), v_rates, v_takes
    );

    transaction_id := v_transaction;
    RETURN NEXT;
    RETURN QUERY SELECT v_transaction, lots.* FROM unnest(v_ids, v_remaining, v_amounts) AS lots;
END;
$function$;
