-- A whole posting as one statement, for callers outside any transaction: inserts the
-- transaction row (unless its idempotency key exists) and applies the postings with
-- credits_apply_postings. Called in autocommit mode it is its own database transaction: the
-- holder account's row lock is released by the server's own commit, without a round trip back
-- to Python first. Returns (transaction, NULL, NULL, NULL), then one row per lot drawn; a single
-- all-NULL row when the key was posted before. Keep its column list in step with
-- LedgerTransaction.
CREATE OR REPLACE FUNCTION credits_post(
    p_public_id uuid,
    p_key character varying,
    p_kind character varying,
    p_description character varying,
    p_metadata jsonb,
    p_created_by bigint,
    p_at timestamp with time zone,
    p_accounts bigint[],
    p_amounts bigint[],
    p_grants bigint[],
    p_holder boolean[]
)
RETURNS TABLE (transaction_id bigint, grant_id bigint, remaining bigint, amount bigint)
LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
DECLARE
    v_transaction bigint;
BEGIN
    INSERT INTO credits_ledgertransaction
        (public_id, idempotency_key, kind, description, metadata, created_by_id, created_at)
    VALUES (p_public_id, p_key, p_kind, p_description, p_metadata, p_created_by, p_at)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id INTO v_transaction;
    IF v_transaction IS NULL THEN
        -- The key was posted before: one row with no transaction tells the caller to replay.
        RETURN QUERY SELECT NULL::bigint, NULL::bigint, NULL::bigint, NULL::bigint;
        RETURN;
    END IF;
    RETURN QUERY SELECT v_transaction, NULL::bigint, NULL::bigint, NULL::bigint;
    RETURN QUERY
        SELECT v_transaction, lots.grant_id, lots.remaining, lots.amount
        FROM credits_apply_postings(
            v_transaction, p_kind, p_at, p_accounts, p_amounts, p_grants, p_holder
        ) AS lots;
END;
$function$;
