"""TOTP secrets and recovery-code seeds written before the MFA adapter encrypted them are
encrypted in place (under MFA_ENCRYPTION_KEY). Values already encrypted are left alone, so
running it again changes nothing; going back decrypts them."""

from django.db import migrations

from portal.users.adapters import MFA_SECRET_PREFIX, mfa_secret_decrypt, mfa_secret_encrypt


def _convert(data: dict, convert, needs) -> bool:
    changed = False
    for field in ("secret", "seed"):
        value = data.get(field)
        if isinstance(value, str) and needs(value):
            data[field] = convert(value)
            changed = True
    codes = data.get("migrated_codes")
    if isinstance(codes, list) and any(needs(code) for code in codes):
        data["migrated_codes"] = [convert(code) if needs(code) else code for code in codes]
        changed = True
    return changed


def _rewrite(apps, convert, needs) -> None:
    authenticators = apps.get_model("mfa", "Authenticator")
    for authenticator in authenticators.objects.filter(type__in=["totp", "recovery_codes"]):
        if _convert(authenticator.data, convert, needs):
            authenticator.save(update_fields=["data"])


def encrypt(apps, schema_editor):
    _rewrite(apps, mfa_secret_encrypt, lambda value: not value.startswith(MFA_SECRET_PREFIX))


def decrypt(apps, schema_editor):
    _rewrite(apps, mfa_secret_decrypt, lambda value: value.startswith(MFA_SECRET_PREFIX))


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0001_initial"),
        ("mfa", "0003_authenticator_type_uniq"),
    ]

    operations = [migrations.RunPython(encrypt, decrypt)]
