-- Many usage charges in one statement (a metering tick charges every running sandbox): one
-- usage transaction per item through credits_post_debit, in the order given (callers sort by
-- account, so two batches lock accounts in one order and cannot deadlock). Each item is its own
-- subtransaction, so a shortfall rolls back that item alone; any other refusal (NC002) fails the
-- whole statement.
--
-- With p_partial, an item whose account cannot cover the whole amount is charged what its open
-- lots still hold, and its metadata records the unpaid rest; an account with nothing left is
-- charged nothing. Without it a shortfall raises NC001 and the statement writes nothing (a
-- single charge that must be paid in full). A key posted before is not posted again: its first
-- transaction comes back, marked replayed, with what it charged the item's account.
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
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
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
