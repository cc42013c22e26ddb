"""Metering in the admin: to read, never to edit (charges are keyed records of the books)."""

from django.contrib import admin

from portal.credits.admin import ReadOnlyAdmin

from .models import SandboxRun, UsageCharge


@admin.register(SandboxRun)
class SandboxRunAdmin(ReadOnlyAdmin):
    list_display = [
        "public_id",
        "sandbox",
        "account",
        "rate_millicredits",
        "started_at",
        "ended_at",
        "charged_credit_seconds",
        "unpaid_credit_seconds",
        "stop_at",
    ]
    list_filter = ["settled"]
    list_select_related = ["sandbox", "account"]
    search_fields = ["public_id", "sandbox__server_name", "sandbox__user__email"]


@admin.register(UsageCharge)
class UsageChargeAdmin(ReadOnlyAdmin):
    list_display = ["idempotency_key", "interval_start", "milliseconds", "due", "charged"]
    search_fields = ["idempotency_key"]
