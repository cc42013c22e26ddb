"""API keys from the command line, for operators: `manage.py apikey create|list|revoke|confirm`.

    apikey create --email EMAIL --name NAME --scopes s1,s2 [--expires-days N]
    apikey create --org SLUG --by EMAIL --name NAME --scopes s1,s2 [--expires-days N]
    apikey list --email EMAIL
    apikey revoke KEY_ID          (the 12-character key id, or the nac_<id>_… prefix)
    apikey confirm KEY_ID --by EMAIL

An organisation's key answers to a person, `--by`: an owner or admin there. It stops working
when they leave the organisation or stop being an admin, until an owner takes it on with
`confirm` (the owner then answers for it).

`create` writes the full key alone on stdout (so `KEY=$(manage.py apikey create …)` works) and
says on stderr that it will not be shown again. Nothing else ever prints a secret.
"""

import re

from django.core.management.base import BaseCommand, CommandError

from portal.apikeys.models import ApiKey
from portal.apikeys.services import (
    DEFAULT_EXPIRY_DAYS,
    apikey_create,
    apikey_reconfirm,
    apikey_revoke,
)
from portal.apikeys.tokens import KEY_ID_LENGTH, PREFIX
from portal.core.exceptions import ApplicationError
from portal.organisations.models import Membership, Organisation
from portal.users.models import User, email_normalise

_KEY_ID = re.compile(rf"^(?:{PREFIX}_)?([0-9a-z]{{{KEY_ID_LENGTH}}})(?:_.*)?$")


class Command(BaseCommand):
    help = "Create, list or revoke API keys. The full key is printed once, at creation."

    def add_arguments(self, parser):
        commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

        create = commands.add_parser("create", help="Make a key and print it once.")
        create.add_argument("--email", help="The person whose own key it is.")
        create.add_argument("--name", required=True, help="What the key is for.")
        create.add_argument(
            "--scopes", required=True, help="Comma-separated, e.g. profile:read,credits:read."
        )
        create.add_argument("--org", metavar="SLUG", help="Make the organisation's key.")
        create.add_argument(
            "--by",
            metavar="EMAIL",
            help="With --org: the owner or admin who makes the key and answers for it.",
        )
        create.add_argument(
            "--expires-days",
            type=int,
            default=DEFAULT_EXPIRY_DAYS,
            metavar="N",
            dest="days",
            help=f"Days until it expires, 1 to 365 (default {DEFAULT_EXPIRY_DAYS}).",
        )

        listing = commands.add_parser("list", help="The keys a person may see; never a secret.")
        listing.add_argument("--email", required=True)

        revoke = commands.add_parser("revoke", help="Revoke a key at once.")
        revoke.add_argument("key_id", metavar="KEY_ID", help="The key id or the nac_<id>_ prefix.")

        confirm = commands.add_parser(
            "confirm", help="An owner takes on an organisation's key that stopped with its person."
        )
        confirm.add_argument("key_id", metavar="KEY_ID", help="The key id or the nac_<id>_ prefix.")
        confirm.add_argument("--by", required=True, metavar="EMAIL", help="The owner.")

    def handle(self, *args, command: str, **options):
        try:
            getattr(self, f"_{command}")(**options)
        except ApplicationError as error:
            raise CommandError(error.message) from error

    # --- subcommands ----------------------------------------------------------------------

    def _create(self, *, email, name, scopes, org, by, days, **options):
        user, organisation, maker = None, None, None
        if org:
            organisation = Organisation.objects.filter(slug=org).first()
            if organisation is None:
                raise CommandError(f"No organisation with the slug {org!r}.")
            if email:
                raise CommandError(
                    "--email names a person's own key; an organisation's key takes --by EMAIL."
                )
            if not by:
                raise CommandError(
                    "An organisation's key needs --by EMAIL: the owner or admin who answers for it."
                )
            maker = _person(by)
            if (
                not Membership.objects.managers()
                .filter(organisation=organisation, user=maker)
                .exists()
            ):
                raise CommandError(
                    f"{maker.email} is not an owner or admin of {organisation.slug}: "
                    "they cannot answer for its keys."
                )
        elif by or not email:
            raise CommandError("Name the key's holder: --email EMAIL, or --org SLUG --by EMAIL.")
        else:
            user = _person(email)
        key, full_key = apikey_create(
            name=name,
            scopes=[scope.strip() for scope in scopes.split(",") if scope.strip()],
            acting_user=None,
            user=user,
            organisation=organisation,
            answerable_by=maker,
            expires_in_days=days,
        )
        self.stdout.write(full_key)
        holder = f"{organisation} (answered for by {maker.email})" if organisation else user.email
        self.stderr.write(
            f"Created {key.display_prefix} “{key.name}” for {holder}, "
            f"expires {key.expires_at:%Y-%m-%d}. This key will not be shown again: copy it now.",
            style_func=self.style.WARNING,
        )

    def _list(self, *, email, **options):
        user = _person(email)
        keys = ApiKey.objects.for_user(user).select_related("user", "organisation")
        if not keys:
            self.stderr.write(f"{user.email} has no API keys.")
            return
        for key in keys:
            if key.last_used_at:
                used = key.last_used_at.isoformat(timespec="seconds")
                used += f" from {key.last_used_ip}" if key.last_used_ip else ""
            else:
                used = "never"
            fields = [
                key.display_prefix,
                key.name,
                f"org:{key.organisation.slug}" if key.organisation_id else f"me:{key.user.email}",
                ",".join(key.scopes),
                f"created {key.created_at.isoformat(timespec='seconds')}",
                f"last used {used}",
                f"expires {key.expires_at.isoformat(timespec='seconds')}",
                key.state,
            ]
            self.stdout.write("\t".join(fields))

    def _revoke(self, *, key_id, **options):
        key = apikey_revoke(key=_key(key_id), acting_user=None)
        self.stdout.write(
            self.style.SUCCESS(f"Revoked {key.display_prefix} “{key.name}”; it is refused now.")
        )

    def _confirm(self, *, key_id, by, **options):
        key = apikey_reconfirm(key=_key(key_id), acting_user=None, owner=_person(by))
        self.stdout.write(
            self.style.SUCCESS(
                f"{key.answerable_by.email} now answers for {key.display_prefix} “{key.name}”; "
                f"it works while they are an owner or admin of {key.organisation.slug}."
            )
        )


def _key(key_id: str) -> ApiKey:
    match = _KEY_ID.match(key_id.strip())
    key = ApiKey.objects.filter(key_id=match.group(1)).first() if match else None
    if key is None:
        # Never echo what was given: it may be a whole key, secret included.
        raise CommandError("No API key with that id.")
    return key


def _person(email: str) -> User:
    try:
        return User.objects.get(email=email_normalise(email))
    except User.DoesNotExist as exc:
        raise CommandError(f"No user with the e-mail address {email!r}.") from exc
