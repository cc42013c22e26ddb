"""Give or take the programme-manager role: `manage.py programme_manager add|remove EMAIL`."""

from django.core.management.base import BaseCommand, CommandError

from portal.users.models import User, email_normalise
from portal.users.services import programme_manager_grant, programme_manager_revoke


class Command(BaseCommand):
    help = "Grant or revoke the programme-manager role (group + staff access) for a user."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["add", "remove"])
        parser.add_argument("email")

    def handle(self, *args, action: str, email: str, **options):
        try:
            user = User.objects.get(email=email_normalise(email))
        except User.DoesNotExist as exc:
            raise CommandError(f"No user with the e-mail address {email!r}.") from exc
        if action == "add":
            programme_manager_grant(user=user, acting_user=None)
            self.stdout.write(
                self.style.SUCCESS(
                    f"{user.email} is now a programme manager. They must set up two-factor "
                    "authentication before they can open programme pages."
                )
            )
        else:
            programme_manager_revoke(user=user, acting_user=None)
            self.stdout.write(self.style.SUCCESS(f"{user.email} is no longer a programme manager."))
