"""Every organisation key answers to a person: its maker, until an owner re-confirms it.

Existing organisation keys answer to the member who made them. Keys made by
`manage.py apikey create --org` before this change record no maker: they are left with no one to
answer for them, which apikey_authenticate refuses (401) from the first request after this
migration, and the key page shows them as needing an owner's confirmation. They are not revoked:
an owner can take such a key on (`apikey confirm`, or the key page) without handing a new
secret to every service that uses it, and the refusal already closes the hole with no window.
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import F


def answerable_is_the_maker(apps, schema_editor):
    ApiKey = apps.get_model("apikeys", "ApiKey")
    ApiKey.objects.filter(organisation__isnull=False, created_by__isnull=False).update(
        answerable_by=F("created_by")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("apikeys", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="answerable_by",
            field=models.ForeignKey(
                blank=True,
                help_text="Organisation keys: the owner or admin who answers for the key.",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(answerable_is_the_maker, migrations.RunPython.noop),
    ]
