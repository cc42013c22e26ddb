-- A model request's hold in one round trip (inference.usage.services.request_hold, on
-- PostgreSQL; SQLite holds through the ORM with the same steps). Called in autocommit it is its
-- own transaction. Under READ COMMITTED each statement below reads what committed before it
-- began: the sums are read after the account's spend row is locked, so a concurrent hold is
-- either waited for and counted or not yet begun. Returns the new row's id, or NULL (nothing
-- written) when what the account may still spend is less than the maximum cost, with that
-- amount either way. The statuses are ModelRequest.Status's values.
CREATE OR REPLACE FUNCTION public.llm_usage_hold(p_request_id character varying, p_account_id bigint, p_api_key_id bigint, p_user_id bigint, p_model_id bigint, p_replica_id bigint, p_endpoint character varying, p_stream boolean, p_max_cost bigint, p_now timestamp with time zone)
 RETURNS TABLE(request_pk bigint, available_microcredits numeric)
 LANGUAGE plpgsql
AS $function$
DECLARE
  v_carried numeric;
  v_lots numeric;
  v_unposted numeric;
  v_available numeric;
  v_id bigint;
BEGIN
  -- The account's lock for model spending, made on first use (a concurrent first use's row
  -- is waited for and then locked).
  SELECT s.priced_microcredits - s.charged_credit_seconds * 1000000 INTO v_carried
    FROM llm_usage_modelspend s WHERE s.account_id = p_account_id FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO llm_usage_modelspend (account_id, priced_microcredits, charged_credit_seconds, updated_at)
      VALUES (p_account_id, 0, 0, p_now) ON CONFLICT (account_id) DO NOTHING;
    SELECT s.priced_microcredits - s.charged_credit_seconds * 1000000 INTO STRICT v_carried
      FROM llm_usage_modelspend s WHERE s.account_id = p_account_id FOR UPDATE;
  END IF;
  -- Unexpired lots (credits.selectors.available_credit_seconds).
  SELECT COALESCE(SUM(g.remaining), 0) INTO v_lots
    FROM credits_creditgrant g
    WHERE g.account_id = p_account_id AND g.remaining > 0 AND g.expires_at > p_now;
  -- Running holds and finished-but-unposted costs, in one snapshot (selectors.unposted_microcredits).
  SELECT COALESCE(SUM(r.held_microcredits) FILTER (WHERE r.status = 'running'), 0)
       + COALESCE(SUM(r.cost_microcredits) FILTER (WHERE r.status = 'finished'), 0)
    INTO v_unposted
    FROM llm_usage_modelrequest r
    WHERE r.account_id = p_account_id AND r.status IN ('running', 'finished');
  v_available := v_lots * 1000000 - v_carried - v_unposted;
  IF v_available < p_max_cost THEN
    RETURN QUERY SELECT NULL::bigint, v_available;
    RETURN;
  END IF;
  INSERT INTO llm_usage_modelrequest (
      request_id, account_id, api_key_id, user_id, model_id, replica_id, endpoint, stream,
      status, held_microcredits, prompt_tokens, completion_tokens, cost_microcredits,
      error_code, charge_id, started_at, finished_at)
    VALUES (
      p_request_id, p_account_id, p_api_key_id, p_user_id, p_model_id, p_replica_id, p_endpoint,
      p_stream, 'running', p_max_cost, 0, 0, 0, '', NULL, p_now, NULL)
    RETURNING id INTO v_id;
  RETURN QUERY SELECT v_id, v_available;
END;
$function$
