"""The books in the admin: readable, never writable. Corrections are reversing transactions,
posted through the programme pages, never edits."""

from django.contrib import admin

from .models import (
    ApplicationEvent,
    CreditAccount,
    CreditApplication,
    CreditGrant,
    LedgerEntry,
    LedgerTransaction,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class LedgerEntryInline(admin.TabularInline):
    model = LedgerEntry
    fields = ["account", "grant", "amount", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "kind", "idempotency_key", "description", "created_by"]
    list_filter = ["kind"]
    search_fields = ["idempotency_key", "description"]
    date_hierarchy = "created_at"
    inlines = [LedgerEntryInline]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "account", "grant", "amount", "transaction"]
    list_select_related = ["account", "grant", "transaction"]
    list_filter = ["kind"]


@admin.register(CreditAccount)
class CreditAccountAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "kind", "balance", "created_at"]
    list_filter = ["kind"]
    search_fields = ["organisation__legal_name", "user__email"]


@admin.register(CreditGrant)
class CreditGrantAdmin(ReadOnlyAdmin):
    list_display = [
        "account",
        "source",
        "amount",
        "remaining",
        "rate_pkr_per_gpu_hour",
        "expires_at",
    ]
    list_filter = ["source"]
    list_select_related = ["account"]


class ApplicationEventInline(admin.TabularInline):
    model = ApplicationEvent
    fields = ["created_at", "author", "from_state", "to_state", "message"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(CreditApplication)
class CreditApplicationAdmin(ReadOnlyAdmin):
    """State changes go through the review pages (services), so the admin only shows."""

    list_display = ["title", "organisation", "state", "requested_gpu_hours", "submitted_at"]
    list_filter = ["state", "sector"]
    search_fields = ["title", "organisation__legal_name"]
    inlines = [ApplicationEventInline]
