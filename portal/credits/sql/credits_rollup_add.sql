-- Adds holder legs to their accounts' roll-ups (AccountRollup): for the local day and the local
-- month of p_at, per account and lot rate, the signed sum and the number of legs. p_accounts,
-- p_rates and p_amounts describe the legs, one element per leg, all of kind p_kind.
--
-- Every function that writes holder legs calls it in the same transaction, while it holds the
-- legs' account row locks (taken by the balance UPDATE): no two postings add to one account's
-- rows at once, the rows never fall behind the ledger, and no lock is added. Legs of one account
-- at one rate are summed first (one statement may not update a row twice).
CREATE OR REPLACE FUNCTION credits_rollup_add(
    p_kind character varying,
    p_at timestamp with time zone,
    p_accounts bigint[],
    p_rates numeric[],
    p_amounts bigint[]
)
RETURNS void
LANGUAGE plpgsql
AS $function$
DECLARE
    v_day date := credits_local_day(p_at);
BEGIN
    INSERT INTO credits_accountrollup AS r
        (account_id, period, starts, kind, rate_pkr_per_gpu_hour, amount, entries)
    SELECT leg.account, p.period, p.starts, p_kind, leg.rate, sum(leg.amount), count(*)
    FROM unnest(p_accounts, p_rates, p_amounts) AS leg(account, rate, amount)
    CROSS JOIN (
        VALUES ('day', v_day), ('month', v_day - (extract(day FROM v_day)::integer - 1))
    ) AS p(period, starts)
    GROUP BY leg.account, p.period, p.starts, leg.rate
    ON CONFLICT (account_id, period, starts, kind, rate_pkr_per_gpu_hour)
    DO UPDATE SET amount = r.amount + excluded.amount, entries = r.entries + excluded.entries;
END;
$function$;
