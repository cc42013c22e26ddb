"""Make the audit table append-only in the database itself (see core.migration_ops)."""

from django.db import migrations

from portal.core.migration_ops import AppendOnly


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [AppendOnly("audit_auditevent", name="audit_event_append_only")]
