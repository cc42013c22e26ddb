-- Many usage charges in one statement (a metering tick charges every running sandbox): one
-- usage transaction per item, in the order given (callers sort by account, so two batches lock
-- accounts in one order and cannot deadlock).
--
-- Items whose account can pay for all of them are posted together, set-based: one INSERT of
-- their transactions, the accounts locked in primary-key order and debited by one UPDATE, the
-- lots drawn in the order they expire (each account's items one after another, as one by one
-- would draw them) by one UPDATE, one INSERT of all the entries, and one call adding the
-- holder legs to their roll-ups (credits_rollup_add, as credits_post_debit does). That batch
-- runs in one subtransaction; when something changed under it (a key posted meanwhile, a
-- concurrent debit that left too little), it is rolled back and its items are posted one by
-- one instead.
--
-- The other items (an account that cannot pay for all its items, a key posted before, a key
-- given twice, an unknown account) go one by one through credits_post_debit, each in its own
-- subtransaction, so a shortfall rolls back that item alone; any other refusal (NC002) fails
-- the whole statement. With p_partial, an item whose account cannot cover the whole amount is
-- charged what its open lots still hold, and its metadata records the unpaid rest; an account
-- with nothing left is charged nothing. Without it a shortfall raises NC001 and the statement
-- writes nothing (a single charge that must be paid in full). A key posted before is not
-- posted again: its first transaction comes back, marked replayed, with what it charged the
-- item's account.
CREATE OR REPLACE FUNCTION credits_post_usage(
    p_usage_account bigint,
    p_description character varying,
    p_at timestamp with time zone,
    p_public_ids uuid[],
    p_keys character varying[],
    p_metadata jsonb[],
    p_accounts bigint[],
    p_amounts bigint[],
    p_partial boolean
)
RETURNS TABLE (
    item integer,
    transaction_id bigint,
    charged bigint,
    replayed boolean,
    grant_id bigint,
    remaining bigint,
    amount bigint
)
LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
DECLARE
    i integer;
    v_due bigint;
    v_take bigint;
    v_tries integer;
    v_metadata jsonb;
    v_batch integer[];
    v_rest integer[];
    v_count integer;
    v_items integer[];
    v_txns bigint[];
    v_draw_items integer[];
    v_draw_lots bigint[];
    v_draw_takes bigint[];
    v_draw_accounts bigint[];
    v_draw_rates numeric[];
BEGIN
    -- The set-based batch: items with a key used nowhere else (not posted before, not twice
    -- here) on accounts whose balance and open lots cover all of them, read before any lock.
    -- Not for a single item (usage_charge, an API's charge on a busy account): one by one
    -- holds the account's lock for less (credits_post_debit writes before it takes the lock).
    WITH items AS (
        SELECT n, p_keys[n] AS key, p_accounts[n] AS account, p_amounts[n] AS amount,
               count(*) OVER (PARTITION BY p_keys[n]) AS copies
        FROM generate_subscripts(p_keys, 1) AS n
        WHERE cardinality(p_keys) > 1
    ),
    fresh AS (
        SELECT * FROM items i
        WHERE i.copies = 1
          AND NOT EXISTS (SELECT 1 FROM credits_ledgertransaction t WHERE t.idempotency_key = i.key)
    ),
    needs AS (
        SELECT f.account, sum(f.amount) AS need FROM fresh f GROUP BY f.account
    ),
    covered AS (
        SELECT d.account FROM needs d
        JOIN credits_creditaccount a ON a.id = d.account AND a.kind <> 'system' AND a.balance >= d.need
        WHERE (SELECT coalesce(sum(g.remaining), 0) FROM credits_creditgrant g
               WHERE g.account_id = d.account AND g.remaining > 0 AND g.expires_at > p_at) >= d.need
    )
    SELECT array_agg(f.n ORDER BY f.n) INTO v_batch
    FROM fresh f WHERE f.account IN (SELECT c.account FROM covered c);

    IF v_batch IS NOT NULL THEN
        BEGIN
            PERFORM 1 FROM credits_creditaccount a WHERE a.id = p_usage_account AND a.kind = 'system';
            IF NOT FOUND THEN
                RAISE EXCEPTION 'unknown account' USING ERRCODE = 'NC002';
            END IF;

            -- The transactions, in the order given; a key posted meanwhile is skipped here, and
            -- the whole batch goes one by one.
            WITH inserted AS (
                INSERT INTO credits_ledgertransaction
                    (public_id, idempotency_key, kind, description, metadata, created_by_id, created_at)
                SELECT p_public_ids[n], p_keys[n], 'usage', p_description, p_metadata[n], NULL, p_at
                FROM unnest(v_batch) AS n ORDER BY n
                ON CONFLICT (idempotency_key) DO NOTHING
                RETURNING id, idempotency_key
            )
            SELECT array_agg(n ORDER BY n), array_agg(t.id ORDER BY n), count(*)
            INTO v_items, v_txns, v_count
            FROM inserted t JOIN unnest(v_batch) AS n ON p_keys[n] = t.idempotency_key;
            IF v_count <> array_length(v_batch, 1) THEN
                RAISE EXCEPTION 'a key was posted meanwhile' USING ERRCODE = 'NC009';
            END IF;

            -- The accounts' row locks, in primary-key order, then their balances; a concurrent
            -- debit may have left one too little since the first read.
            PERFORM 1 FROM credits_creditaccount a
            WHERE a.id IN (SELECT p_accounts[n] FROM unnest(v_batch) AS n)
            ORDER BY a.id FOR UPDATE;
            WITH needs AS (
                SELECT p_accounts[n] AS account, sum(p_amounts[n]) AS need
                FROM unnest(v_batch) AS n GROUP BY 1
            ),
            debited AS (
                UPDATE credits_creditaccount a SET balance = a.balance - d.need
                FROM needs d
                WHERE a.id = d.account AND a.kind <> 'system' AND a.balance >= d.need
                RETURNING a.id
            )
            SELECT count(*) INTO v_count FROM debited;
            IF v_count <> (SELECT count(DISTINCT p_accounts[n]) FROM unnest(v_batch) AS n) THEN
                RAISE EXCEPTION 'not enough credits' USING ERRCODE = 'NC009';
            END IF;

            -- The draws, read after the locks were granted: each account's items take, in the
            -- order given, the stretch of its open lots (in the order they expire) that one by
            -- one would have taken; an item over two lots draws from both.
            WITH its AS (
                SELECT n, p_accounts[n] AS account, p_amounts[n] AS amount,
                       sum(p_amounts[n]) OVER (PARTITION BY p_accounts[n] ORDER BY n)
                           - p_amounts[n] AS before
                FROM unnest(v_batch) AS n
            ),
            lots AS (
                SELECT g.id, g.account_id, g.remaining, g.rate_pkr_per_gpu_hour,
                       sum(g.remaining) OVER (PARTITION BY g.account_id ORDER BY g.expires_at, g.id)
                           - g.remaining AS before,
                       row_number() OVER (PARTITION BY g.account_id ORDER BY g.expires_at, g.id) AS ord
                FROM credits_creditgrant g
                WHERE g.account_id IN (SELECT its.account FROM its)
                  AND g.remaining > 0 AND g.expires_at > p_at
            )
            SELECT array_agg(its.n ORDER BY its.n, l.ord), array_agg(l.id ORDER BY its.n, l.ord),
                   array_agg(least(its.before + its.amount, l.before + l.remaining)
                             - greatest(its.before, l.before) ORDER BY its.n, l.ord),
                   array_agg(its.account ORDER BY its.n, l.ord),
                   array_agg(l.rate_pkr_per_gpu_hour ORDER BY its.n, l.ord)
            INTO v_draw_items, v_draw_lots, v_draw_takes, v_draw_accounts, v_draw_rates
            FROM its JOIN lots l ON l.account_id = its.account
                AND l.before < its.before + its.amount AND its.before < l.before + l.remaining;
            IF (SELECT coalesce(sum(t), 0) FROM unnest(v_draw_takes) AS t)
               <> (SELECT sum(p_amounts[n]) FROM unnest(v_batch) AS n) THEN
                RAISE EXCEPTION 'not enough credits' USING ERRCODE = 'NC009';
            END IF;

            UPDATE credits_creditgrant g SET remaining = g.remaining - d.take
            FROM (
                SELECT lot, sum(take) AS take FROM unnest(v_draw_lots, v_draw_takes) AS d(lot, take)
                GROUP BY lot
            ) AS d
            WHERE g.id = d.lot;

            -- Each transaction's system leg, then its holder legs, lot by lot.
            INSERT INTO credits_ledgerentry (transaction_id, account_id, grant_id, amount, kind, created_at)
            SELECT e.txn, e.account, e.lot, e.amount, 'usage', p_at FROM (
                SELECT t.n, 0 AS leg, t.txn, p_usage_account AS account, NULL::bigint AS lot,
                       p_amounts[t.n] AS amount
                FROM unnest(v_items, v_txns) AS t(n, txn)
                UNION ALL
                SELECT d.n, d.leg, t.txn, p_accounts[d.n], d.lot, -d.take
                FROM unnest(v_draw_items, v_draw_lots, v_draw_takes) WITH ORDINALITY AS d(n, lot, take, leg)
                JOIN unnest(v_items, v_txns) AS t(n, txn) ON t.n = d.n
            ) AS e
            ORDER BY e.n, e.leg;
            -- The holder legs in their accounts' roll-ups, as credits_post_debit adds its own.
            PERFORM credits_rollup_add(
                'usage', p_at, v_draw_accounts, v_draw_rates,
                ARRAY(SELECT -t FROM unnest(v_draw_takes) AS t)
            );
        EXCEPTION WHEN SQLSTATE 'NC009' THEN
            v_batch := NULL;  -- all rolled back: every item goes one by one below
            v_items := NULL;
        END;
    END IF;

    IF v_items IS NOT NULL THEN
        RETURN QUERY
            SELECT d.n, t.txn, p_amounts[d.n], false, g.id, g.remaining, g.amount
            FROM unnest(v_draw_items, v_draw_lots) AS d(n, lot)
            JOIN unnest(v_items, v_txns) AS t(n, txn) ON t.n = d.n
            JOIN credits_creditgrant g ON g.id = d.lot;
    END IF;

    SELECT array_agg(n ORDER BY n) INTO v_rest
    FROM generate_subscripts(p_keys, 1) AS n
    WHERE v_batch IS NULL OR n <> ALL (v_batch);

    FOREACH i IN ARRAY coalesce(v_rest, '{}') LOOP
        v_due := p_amounts[i];
        v_take := v_due;
        v_tries := 0;
        LOOP
            v_tries := v_tries + 1;
            v_metadata := p_metadata[i];
            IF v_take < v_due THEN
                v_metadata := v_metadata || jsonb_build_object('unpaid', v_due - v_take);
            END IF;
            BEGIN
                RETURN QUERY
                    SELECT i, posted.transaction_id, v_take, false,
                           posted.grant_id, posted.remaining, posted.amount
                    FROM credits_post_debit(
                        p_public_ids[i], p_keys[i], 'usage', p_description, v_metadata, NULL,
                        p_at, p_accounts[i], p_usage_account, v_take
                    ) AS posted
                    WHERE posted.transaction_id IS NOT NULL;
                IF NOT FOUND THEN
                    -- Posted before (a retried tick, a second beat): report what it charged
                    -- this item's account (nothing, when the key was used for another).
                    RETURN QUERY
                        SELECT i, t.id,
                               coalesce(-sum(e.amount) FILTER (
                                   WHERE e.account_id = p_accounts[i]), 0)::bigint,
                               true, NULL::bigint, NULL::bigint, NULL::bigint
                        FROM credits_ledgertransaction t
                        JOIN credits_ledgerentry e ON e.transaction_id = t.id
                        WHERE t.idempotency_key = p_keys[i]
                        GROUP BY t.id;
                END IF;
                EXIT;
            EXCEPTION WHEN SQLSTATE 'NC001' THEN
                IF NOT p_partial THEN
                    RAISE;
                END IF;
                -- Not enough: take what the open lots hold (read after the refusal released
                -- nothing we hold; a concurrent debit can shrink it again, hence the retries).
                SELECT coalesce(sum(g.remaining), 0) INTO v_take
                FROM credits_creditgrant g
                WHERE g.account_id = p_accounts[i] AND g.remaining > 0 AND g.expires_at > p_at;
                v_take := least(v_take, v_due - 1);
                IF v_take <= 0 OR v_tries >= 3 THEN
                    RETURN QUERY SELECT i, NULL::bigint, 0::bigint, false, NULL::bigint,
                                        NULL::bigint, NULL::bigint;
                    EXIT;
                END IF;
            END;
        END LOOP;
    END LOOP;
END;
$function$;
