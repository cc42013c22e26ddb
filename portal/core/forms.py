"""Glue between services and forms: a service's refusal becomes an error on the right field."""

from django import forms

from .exceptions import ApplicationError


def add_service_error(form: forms.Form, error: ApplicationError) -> None:
    """Attach a service error to its field when the form has it, else to the whole form."""
    field = error.field if error.field in form.fields else None
    form.add_error(field, error.message)
