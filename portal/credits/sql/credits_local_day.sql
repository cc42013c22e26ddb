-- The local calendar day of an instant, in the portal's time zone (settings.TIME_ZONE, Pakistan
-- time; credits.units cuts days and months the same way): the day an account's roll-up of
-- period "day" starts on. The ledger's functions and the roll-ups' rebuild cut days with it.
-- tests/portal/credits/test_rollups.py checks the zone named here is settings.TIME_ZONE.
CREATE OR REPLACE FUNCTION credits_local_day(p_at timestamp with time zone)
 RETURNS date
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$ SELECT (p_at AT TIME ZONE 'Asia/Karachi')::date $function$;
