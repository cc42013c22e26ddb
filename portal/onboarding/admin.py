from django.contrib import admin

from .models import Cohort, StudentProfile, University, UniversityDomain


class UniversityDomainInline(admin.TabularInline):
    model = UniversityDomain
    extra = 1


@admin.register(University)
class UniversityAdmin(admin.ModelAdmin):
    list_display = ["name", "short_name", "city", "is_active"]
    list_filter = ["is_active"]
    search_fields = ["name", "short_name", "domains__domain"]
    inlines = [UniversityDomainInline]


@admin.register(Cohort)
class CohortAdmin(admin.ModelAdmin):
    list_display = ["name", "code", "university", "capacity", "expires_at"]
    search_fields = ["name", "code"]
    readonly_fields = ["public_id", "code", "created_by"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(StudentProfile)
class StudentProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "route", "university", "cohort", "expected_graduation_year"]
    list_filter = ["route", "university"]
    search_fields = ["user__email", "programme", "institution"]
    raw_id_fields = ["user"]
