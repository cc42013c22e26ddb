from django.contrib import admin

from .models import Invitation, Membership, Organisation


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ["legal_name", "secp_registration_number", "sector", "province", "is_active"]
    list_filter = ["sector", "province", "is_active", "data_sensitivity"]
    search_fields = ["legal_name", "secp_registration_number", "ntn", "slug"]
    readonly_fields = ["public_id", "created_at", "updated_at", "created_by"]
    inlines = [MembershipInline]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    list_display = ["email", "organisation", "role", "expires_at", "accepted_at", "revoked_at"]
    search_fields = ["email", "organisation__legal_name"]
    readonly_fields = ["public_id", "invited_by", "accepted_by", "accepted_at"]
