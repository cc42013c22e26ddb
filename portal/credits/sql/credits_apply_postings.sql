-- The locked part of a posting, inside the caller's transaction (posting.insert_and_apply): the
-- same steps as posting._apply_orm, in the same order. Holder balances are updated in
-- primary-key order (the UPDATE takes the row lock and refuses to go below zero); a credit goes
-- into its named lot; a debit comes out of its named lot, or out of the lots that expire first;
-- each holder leg is added to its account's roll-ups (credits_rollup_add) under that lock.
-- Returns the lots drawn, as they stand afterwards. Raises SQLSTATE NC001 (not enough credits),
-- NC002 (unknown account) or NC003 (lot of another account); a raise aborts the caller's
-- transaction, so a refused posting writes nothing.
CREATE OR REPLACE FUNCTION credits_apply_postings(
    p_transaction bigint,
    p_kind character varying,
    p_at timestamp with time zone,
    p_accounts bigint[],
    p_amounts bigint[],
    p_grants bigint[],
    p_holder boolean[]
)
RETURNS TABLE (grant_id bigint, remaining bigint, amount bigint)
LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
DECLARE
    i integer;
    v_account bigint;
    v_delta bigint;
    v_need bigint;
    v_taken bigint;
    v_ids bigint[];
    v_remaining bigint[];
    v_amounts bigint[];
    v_rate numeric;
    v_rates numeric[];
    v_takes bigint[];
BEGIN
    -- System legs first, before any lock: each names an existing system account, and its
    -- entry does not depend on anything the lock protects.
    FOR i IN 1 .. array_length(p_accounts, 1) LOOP
        IF NOT p_holder[i] THEN
            PERFORM 1 FROM credits_creditaccount WHERE id = p_accounts[i] AND kind = 'system';
            IF NOT FOUND THEN
                RAISE EXCEPTION 'unknown account' USING ERRCODE = 'NC002';
            END IF;
            INSERT INTO credits_ledgerentry (transaction_id, account_id, grant_id, amount, kind, created_at)
            VALUES (p_transaction, p_accounts[i], NULL, p_amounts[i], p_kind, p_at);
        END IF;
    END LOOP;

    -- Holder balances, in primary-key order: the UPDATE takes the row lock and refuses to go
    -- below zero in one statement.
    FOR v_account, v_delta IN
        SELECT a, sum(m)::bigint FROM unnest(p_accounts, p_amounts, p_holder) AS t(a, m, h)
        WHERE h GROUP BY a ORDER BY a
    LOOP
        UPDATE credits_creditaccount SET balance = balance + v_delta
        WHERE id = v_account AND kind <> 'system' AND balance + v_delta >= 0;
        IF NOT FOUND THEN
            IF EXISTS (SELECT 1 FROM credits_creditaccount WHERE id = v_account AND kind <> 'system') THEN
                RAISE EXCEPTION 'not enough credits' USING ERRCODE = 'NC001';
            END IF;
            RAISE EXCEPTION 'unknown account' USING ERRCODE = 'NC002';
        END IF;
    END LOOP;

    FOR i IN 1 .. array_length(p_accounts, 1) LOOP
        IF NOT p_holder[i] THEN
            CONTINUE;  -- written above
        ELSIF p_amounts[i] > 0 THEN
            IF p_grants[i] IS NOT NULL THEN
                UPDATE credits_creditgrant g SET remaining = g.remaining + p_amounts[i]
                WHERE g.id = p_grants[i] AND g.account_id = p_accounts[i]
                RETURNING g.rate_pkr_per_gpu_hour INTO v_rate;
                IF NOT FOUND THEN
                    RAISE EXCEPTION 'lot of another account' USING ERRCODE = 'NC003';
                END IF;
            END IF;
            INSERT INTO credits_ledgerentry (transaction_id, account_id, grant_id, amount, kind, created_at)
            VALUES (p_transaction, p_accounts[i], p_grants[i], p_amounts[i], p_kind, p_at);
            PERFORM credits_rollup_add(
                p_kind, p_at, ARRAY[p_accounts[i]], ARRAY[v_rate], ARRAY[p_amounts[i]]
            );
        ELSIF p_grants[i] IS NOT NULL THEN
            -- A debit from one named lot (expiry, revocation).
            UPDATE credits_creditgrant g SET remaining = g.remaining + p_amounts[i]
            WHERE g.id = p_grants[i] AND g.account_id = p_accounts[i]
              AND g.remaining >= -p_amounts[i]
            RETURNING g.id, g.remaining, g.amount, g.rate_pkr_per_gpu_hour
                INTO grant_id, remaining, amount, v_rate;
            IF NOT FOUND THEN
                IF EXISTS (SELECT 1 FROM credits_creditgrant g
                           WHERE g.id = p_grants[i] AND g.account_id = p_accounts[i]) THEN
                    RAISE EXCEPTION 'not enough credits in the lot' USING ERRCODE = 'NC001';
                END IF;
                RAISE EXCEPTION 'lot of another account' USING ERRCODE = 'NC003';
            END IF;
            INSERT INTO credits_ledgerentry (transaction_id, account_id, grant_id, amount, kind, created_at)
            VALUES (p_transaction, p_accounts[i], p_grants[i], p_amounts[i], p_kind, p_at);
            PERFORM credits_rollup_add(
                p_kind, p_at, ARRAY[p_accounts[i]], ARRAY[v_rate], ARRAY[p_amounts[i]]
            );
            RETURN NEXT;
        ELSE
            -- A debit from the lots that expire first, in one statement: its snapshot is taken
            -- after the account lock above was granted, so it sees every earlier commit.
            v_need := -p_amounts[i];
            WITH open_lots AS (
                SELECT g.id, g.remaining,
                       sum(g.remaining) OVER (ORDER BY g.expires_at, g.id) - g.remaining
                           AS before,
                       row_number() OVER (ORDER BY g.expires_at, g.id) AS ord
                FROM credits_creditgrant g
                WHERE g.account_id = p_accounts[i] AND g.remaining > 0 AND g.expires_at > p_at
            ),
            draws AS (
                SELECT id, ord, least(remaining, v_need - before) AS take
                FROM open_lots WHERE before < v_need
            ),
            taken AS (
                UPDATE credits_creditgrant g SET remaining = g.remaining - d.take
                FROM draws d WHERE g.id = d.id
                RETURNING g.id, g.remaining, g.amount, g.rate_pkr_per_gpu_hour, d.take, d.ord
            ),
            written AS (
                INSERT INTO credits_ledgerentry
                    (transaction_id, account_id, grant_id, amount, kind, created_at)
                SELECT p_transaction, p_accounts[i], t.id, -t.take, p_kind, p_at
                FROM taken t ORDER BY t.ord
            )
            SELECT coalesce(sum(t.take), 0), array_agg(t.id ORDER BY t.ord),
                   array_agg(t.remaining ORDER BY t.ord), array_agg(t.amount ORDER BY t.ord),
                   array_agg(t.rate_pkr_per_gpu_hour), array_agg(-t.take)
            INTO v_taken, v_ids, v_remaining, v_amounts, v_rates, v_takes
            FROM taken t;
            IF v_taken < v_need THEN
                RAISE EXCEPTION 'not enough credits' USING ERRCODE = 'NC001';
            END IF;
            PERFORM credits_rollup_add(
                p_kind, p_at, array_fill(p_accounts[i], ARRAY[cardinality(v_takes)]), v_rates,
                v_takes
            );
            RETURN QUERY SELECT * FROM unnest(v_ids, v_remaining, v_amounts);
        END IF;
    END LOOP;
END;
$function$;
