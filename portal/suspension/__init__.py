"""Suspension by the programme: an organisation or a student, suspended at once and reactivated
later, everything they own kept.

A plain package, not a Django app: it has no models, templates or migrations. It sits above
what a suspension touches (organisations, onboarding, users, API keys, the audit log and the
launcher), and nothing below it imports it; the programme pages (portal.dashboard) call it.
"""
