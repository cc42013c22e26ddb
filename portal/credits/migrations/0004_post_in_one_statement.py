"""PostgreSQL: a whole posting as one statement, for callers outside any transaction.

`credits_post` inserts the transaction row (unless its idempotency key exists) and applies the
postings with `credits_apply_postings`. Called in autocommit mode it is its own database
transaction: the holder account's row lock is released by the server's own commit, without a
round trip back to Python first. Keep its column list in step with LedgerTransaction.
"""

from django.db import migrations

from portal.core.migration_ops import VendorSQL

FORWARD = r"""
CREATE OR REPLACE FUNCTION credits_post(
    p_public_id uuid,
    p_key varchar,
    p_kind varchar,
    p_description varchar,
    p_metadata jsonb,
    p_created_by bigint,
    p_at timestamptz,
    p_accounts bigint[],
    p_amounts bigint[],
    p_grants bigint[],
    p_holder boolean[]
) RETURNS TABLE (transaction_id bigint, grant_id bigint, remaining bigint, amount bigint)
LANGUAGE plpgsql VOLATILE AS $$
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
            v_transaction, p_at, p_accounts, p_amounts, p_grants, p_holder
        ) AS lots;
END;
$$;
"""
BACKWARD = (
    "DROP FUNCTION IF EXISTS credits_post(uuid, varchar, varchar, varchar, jsonb, bigint, "
    "timestamptz, bigint[], bigint[], bigint[], boolean[]);"
)


class Migration(migrations.Migration):
    dependencies = [("credits", "0003_apply_postings_function")]

    operations = [VendorSQL({"postgresql": FORWARD}, {"postgresql": BACKWARD})]
