"""Msgids from django-allauth (and a few from Django) that the portal's catalogue translates.

django-allauth 65 ships no Urdu catalogue, and Django's own Urdu catalogue is old and partial (no
password-validation messages, for one). A translation in LOCALE_PATHS (portal/locale/) wins over an
app's own, so portal/locale/ur/LC_MESSAGES/django.po can translate those strings too. But
``makemessages`` keeps only the msgids it finds in this project's sources: everything else is
marked obsolete and, with ``--no-obsolete``, dropped. This module names each such msgid once so
that ``makemessages`` keeps it. Nothing imports it; the calls are markers for xgettext:
``gettext_noop`` for plain strings, ``ngettext_lazy`` for plurals, ``pgettext_lazy`` for a context.

Every msgid is copied exactly (spaces, newlines and curly apostrophes included) from
django-allauth 65.21 (account and mfa templates, e-mails, messages, forms and adapters, each group
headed by its path under allauth/) and from Django 5.2. A msgid that an upgrade rewords stops
matching and shows in English again: after upgrading either package, compare this list with the
package's own ``locale/en/LC_MESSAGES/django.po``.
"""

from django.utils.translation import gettext_noop as _
from django.utils.translation import ngettext_lazy, pgettext_lazy

ALLAUTH_MESSAGES = (
    # account/adapter.py
    _("This account is currently inactive."),
    _("You cannot remove your primary email address."),
    _("This email address is already associated with this account."),
    _("The email address and/or password you specified are not correct."),
    _("The phone number and/or password you specified are not correct."),
    _("A user is already registered with this email address."),
    _("Please type your current password."),
    _("Incorrect code."),
    _("Incorrect password."),
    _("Invalid or expired key."),
    _("Invalid login."),
    _("The password reset token was invalid."),
    _("You cannot add more than %d email addresses."),
    _("A user is already registered with this phone number."),
    _("Too many failed login attempts. Try again later."),
    _("The email address is not assigned to any user account."),
    _("The phone number is not assigned to any user account."),
    _("Your primary email address must be verified."),
    _("Username can not be used. Please use other username."),
    _("The username and/or password you specified are not correct."),
    _("Please select only one."),
    _("The new value must be different from the current one."),
    _("Be patient, you are sending too many requests."),
    _("Use your password"),
    _("Use authenticator app or code"),
    _("Use a security key"),
    # account/fields.py
    _("Email"),
    _("Email address"),
    _("Forgot your password?"),
    _("Enter a phone number including country code (e.g. +1 for the US)."),
    _("Phone"),
    # account/forms.py
    _("You must type the same password each time."),
    _("Password"),
    _("Remember Me"),
    _("Username"),
    pgettext_lazy("field label", "Login"),
    _("Username, email or phone"),
    _("Username or email"),
    _("Username or phone"),
    _("Email or phone"),
    _("Email (again)"),
    _("Email address confirmation"),
    _("Email (optional)"),
    _("Username (optional)"),
    _("You must type the same email each time."),
    _("Password (again)"),
    _("Current Password"),
    _("New Password"),
    _("New Password (again)"),
    _("Code"),
    # mfa/adapter.py
    _("You cannot add an email address to an account protected by two-factor authentication."),
    _("You cannot deactivate two-factor authentication."),
    _("You cannot generate recovery codes without having two-factor authentication enabled."),
    _("You cannot activate two-factor authentication until you have verified your email address."),
    _("Master key"),
    _("Backup key"),
    _("Key nr. {number}"),
    # mfa/totp/forms.py
    _("Authenticator code"),
    # templates/account/account_inactive.html
    _("Account Inactive"),
    _("This account is inactive."),
    # templates/account/base_confirm_code.html
    _("Confirm"),
    _("Cancel"),
    # templates/account/base_reauthenticate.html
    _("Confirm Access"),
    _("Please reauthenticate to safeguard your account."),
    _("Alternative options"),
    # templates/account/confirm_login_code.html
    _("Sign In"),
    # templates/account/confirm_password_reset_code.html
    _("Password Reset"),
    # templates/account/email.html
    _("Email Addresses"),
    _("The following email addresses are associated with your account:"),
    _("Verified"),
    _("Unverified"),
    _("Primary"),
    _("Make Primary"),
    _("Re-send Verification"),
    _("Remove"),
    _("Add Email Address"),
    _("Add Email"),
    _("Do you really want to remove the selected email address?"),
    # templates/account/email/account_already_exists_message.txt
    _(
        "You are receiving this email because you or someone else tried to signup for an\n"
        "account using email address:\n"
        "\n"
        "%(email)s\n"
        "\n"
        "However, an account using that email address already exists.  In case you have\n"
        "forgotten about this, please use the password forgotten procedure to recover\n"
        "your account:\n"
        "\n"
        "%(password_reset_url)s"
    ),
    # templates/account/email/account_already_exists_subject.txt
    _("Account Already Exists"),
    # templates/account/email/base_message.txt
    _("Hello from %(site_name)s!"),
    _("Thank you for using %(site_name)s!\n%(site_domain)s"),
    # templates/account/email/base_notification.txt
    _("You are receiving this mail because the following change was made to your account:"),
    _(
        "If you do not recognize this change then please take proper security precautions "
        "immediately. The change to your account originates from:\n"
        "\n"
        "- IP address: %(ip)s\n"
        "- Browser: %(user_agent)s\n"
        "- Date: %(timestamp)s"
    ),
    # templates/account/email/email_changed_message.txt
    _("Your email has been changed from %(from_email)s to %(to_email)s."),
    # templates/account/email/email_changed_subject.txt
    _("Email Changed"),
    # templates/account/email/email_confirmation_message.txt
    _(
        "You're receiving this email because user %(user_display)s has given your email "
        "address to register an account on %(site_domain)s."
    ),
    _("Your email verification code is listed below. Please enter it in your open browser window."),
    _("To confirm this is correct, go to %(activate_url)s"),
    # templates/account/email/email_confirmation_subject.txt
    _("Please Confirm Your Email Address"),
    # templates/account/email/login_code_message.txt
    _("This mail can be safely ignored if you did not initiate this action."),
    # templates/account/email/password_changed_message.txt
    _("Your password has been changed."),
    # templates/account/email/password_changed_subject.txt
    _("Password Changed"),
    # templates/account/email/password_reset_key_message.txt
    _(
        "You're receiving this email because you or someone else has requested a password "
        "reset for your user account.\n"
        "It can be safely ignored if you did not request a password reset. Click the link "
        "below to reset your password."
    ),
    _("In case you forgot, your username is %(username)s."),
    # templates/account/email/password_reset_key_subject.txt
    _("Password Reset Email"),
    # templates/account/email/unknown_account_message.txt
    _(
        "You are receiving this email because you, or someone else, tried to access an "
        "account with email %(email)s. However, we do not have any record of such an "
        "account in our database."
    ),
    _("If it was you, you can sign up for an account using the link below."),
    # templates/account/email/unknown_account_subject.txt
    _("Unknown Account"),
    # templates/account/email_change.html
    _("Email Address"),
    _("Current email"),
    _("Changing to"),
    _("Your email address is still pending verification."),
    _("Cancel Change"),
    _("Change to"),
    _("Change Email"),
    # templates/account/email_confirm.html
    _("Confirm Email Address"),
    _(
        'Please confirm that <a href="mailto:%(email)s">%(email)s</a> is an email '
        "address for user %(user_display)s."
    ),
    _("Unable to confirm %(email)s because it is already confirmed by a different account."),
    _(
        "This email confirmation link expired or is invalid. Please <a "
        'href="%(email_url)s">issue a new email confirmation request</a>.'
    ),
    # templates/account/login.html
    _("If you have not created an account yet, then please %(link)ssign up%(end_link)s first."),
    _("Sign in with a passkey"),
    _("Send me a sign-in code"),
    # templates/account/logout.html
    _("Sign Out"),
    _("Are you sure you want to sign out?"),
    # templates/account/messages/cannot_delete_primary_email.txt
    _("You cannot remove your primary email address (%(email)s)."),
    # templates/account/messages/email_confirmation_sent.txt
    _("Confirmation email sent to %(email)s."),
    # templates/account/messages/email_confirmed.txt
    _("You have confirmed %(email)s."),
    # templates/account/messages/email_deleted.txt
    _("Removed email address %(email)s."),
    # templates/account/messages/logged_in.txt
    _("Successfully signed in as %(name)s."),
    # templates/account/messages/logged_out.txt
    _("You have signed out."),
    # templates/account/messages/login_code_sent.txt
    _("A sign-in code has been sent to %(recipient)s."),
    # templates/account/messages/password_changed.txt
    _("Password successfully changed."),
    # templates/account/messages/password_set.txt
    _("Password successfully set."),
    # templates/account/messages/phone_verification_sent.txt
    _("A verification code has been sent to %(phone)s."),
    # templates/account/messages/phone_verified.txt
    _("You have verified phone number %(phone)s."),
    # templates/account/messages/primary_email_set.txt
    _("Primary email address set."),
    # templates/account/password_change.html
    _("Change Password"),
    # templates/account/password_reset.html
    _(
        "Forgotten your password? Enter your email address below, and we'll send you an "
        "email allowing you to reset it."
    ),
    _("Reset My Password"),
    _("Please contact us if you have any trouble resetting your password."),
    # templates/account/password_reset_done.html
    _(
        "We have sent you an email. If you have not received it please check your spam "
        "folder. Otherwise contact us if you do not receive it in a few minutes."
    ),
    # templates/account/password_reset_from_key.html
    _("Bad Token"),
    _(
        "The password reset link was invalid, possibly because it has already been used.  "
        'Please request a <a href="%(passwd_reset_url)s">new password reset</a>.'
    ),
    # templates/account/password_reset_from_key_done.html
    _("Your password is now changed."),
    # templates/account/reauthenticate.html
    _("Enter your password:"),
    # templates/account/signup.html
    _("Signup"),
    _("Sign Up"),
    _("Already have an account? Then please %(link)ssign in%(end_link)s."),
    _("Sign up using a passkey"),
    # templates/account/snippets/already_logged_in.html
    _("Note"),
    _("You are already logged in as %(user_display)s."),
    # templates/account/snippets/warn_no_email.html
    _("Warning:"),
    _(
        "You currently do not have any email address set up. You should really add an "
        "email address so you can receive notifications, reset your password, etc."
    ),
    # templates/account/verification_sent.html
    _("Verify Your Email Address"),
    _(
        "We have sent an email to you for verification. Follow the link provided to "
        "finalize the signup process. If you do not see the verification email in your "
        "main inbox, check your spam folder. Please contact us if you do not receive the "
        "verification email within a few minutes."
    ),
    # templates/account/verified_email_required.html
    _(
        "This part of the site requires us to verify that\n"
        "you are who you claim to be. For this purpose, we require that you\n"
        "verify ownership of your email address. "
    ),
    _(
        "We have sent an email to you for\n"
        "verification. Please click on the link inside that email. If you do not see the "
        "verification email in your main inbox, check your spam folder. Otherwise\n"
        "contact us if you do not receive it within a few minutes."
    ),
    _(
        '<strong>Note:</strong> you can still <a href="%(email_url)s">change your email '
        "address</a>."
    ),
    # templates/allauth/layouts/base.html
    _("Two-Factor Authentication"),
    # templates/mfa/authenticate.html
    _(
        "Your account is protected by two-factor authentication. Please enter an "
        "authenticator code:"
    ),
    # templates/mfa/email/totp_activated_message.txt
    _("Authenticator app activated."),
    # templates/mfa/email/totp_deactivated_message.txt
    _("Authenticator app deactivated."),
    # templates/mfa/index.html
    _("Authenticator App"),
    _("Authentication using an authenticator app is active."),
    _("An authenticator app is not active."),
    _("Deactivate"),
    _("Activate"),
    _("Security Keys"),
    ngettext_lazy(
        "You have added %(count)s security key.",
        "You have added %(count)s security keys.",
    ),
    _("No security keys have been added."),
    _("Manage"),
    _("Add"),
    _("Recovery Codes"),
    ngettext_lazy(
        "There is %(unused_count)s out of %(total_count)s recovery codes available.",
        "There are %(unused_count)s out of %(total_count)s recovery codes available.",
    ),
    _("No recovery codes set up."),
    _("View"),
    _("Download"),
    _("Generate"),
    # templates/mfa/messages/recovery_codes_generated.txt
    _("A new set of recovery codes has been generated."),
    _("Save them  in a secure location now — they won't be shown again."),
    # templates/mfa/messages/webauthn_added.txt
    _("Security key added."),
    # templates/mfa/messages/webauthn_removed.txt
    _("Security key removed."),
    # templates/mfa/reauthenticate.html
    _("Enter an authenticator code:"),
    # templates/mfa/recovery_codes/generate.html
    _("You are about to generate a new set of recovery codes for your account."),
    _("This action will invalidate your existing codes."),
    _("Are you sure?"),
    # templates/mfa/recovery_codes/index.html
    _("Unused codes"),
    _("Download codes"),
    _("Generate new codes"),
    _("I have saved my recovery codes"),
    # templates/mfa/totp/activate_form.html
    _("Activate Authenticator App"),
    _(
        "To protect your account with two-factor authentication, scan the QR code below "
        "with your authenticator app. Then, input the verification code generated by the "
        "app below."
    ),
    _("Authenticator secret"),
    _("You can store this secret and use it to reinstall your authenticator app at a later time."),
    # templates/mfa/totp/deactivate_form.html
    _("Deactivate Authenticator App"),
    _("You are about to deactivate authenticator app based authentication. Are you sure?"),
)

DJANGO_MESSAGES = (
    # django/core/validators.py
    _("Enter a valid email address."),
    ngettext_lazy(
        "Ensure this value has at most %(limit_value)d character (it has %(show_value)d).",
        "Ensure this value has at most %(limit_value)d characters (it has %(show_value)d).",
    ),
    # django/forms/fields.py, django/forms/models.py
    _("This field is required."),
    _("Select a valid choice. %(value)s is not one of the available choices."),
    _("Select a valid choice. That choice is not one of the available choices."),
    # django/contrib/auth/password_validation.py
    ngettext_lazy(
        "This password is too short. It must contain at least %d character.",
        "This password is too short. It must contain at least %d characters.",
    ),
    ngettext_lazy(
        "Your password must contain at least %(min_length)d character.",
        "Your password must contain at least %(min_length)d characters.",
    ),
    _("The password is too similar to the %(verbose_name)s."),
    _("Your password can’t be too similar to your other personal information."),
    _("This password is too common."),
    _("Your password can’t be a commonly used password."),
    _("This password is entirely numeric."),
    _("Your password can’t be entirely numeric."),
)
