"""People's model pages: the catalogue a person may call, one model's page (how to call it,
what it costs, what is kept of a request) and the playground. Thin: the selectors read.

A model offered only to one organisation or cohort is invisible to everyone else: its page is a
404, as for a name that does not exist."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from .models import ServedModel
from .selectors import (
    is_student,
    model_for_person,
    models_for_person,
    models_serving,
    organisations_managed,
    payers_for_person,
    price_per_million,
)

API_PATH = "/llm/v1"
SCOPE = "models:invoke"


def _base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri(API_PATH)


@login_required
def catalogue(request: HttpRequest) -> HttpResponse:
    models = list(models_for_person(user=request.user))
    serving = models_serving(models=models)
    rows = [
        {
            "model": model,
            "serving": model.pk in serving,
            "input": price_per_million(model.input_price),
            "output": price_per_million(model.output_price),
        }
        for model in models
    ]
    return render(
        request,
        "models/list.html",
        {
            "rows": rows,
            "base_url": _base_url(request),
            "scope": SCOPE,
            "rate_pkr": settings.CREDITS_DEFAULT_RATE_PKR_PER_GPU_HOUR,
            "manages": organisations_managed(user=request.user),
        },
    )


@login_required
def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    model = model_for_person(user=request.user, name=name)
    if model is None:
        raise Http404
    return render(
        request,
        "models/detail.html",
        {
            "model": model,
            "serving": model.pk in models_serving(models=[model]),
            "input": price_per_million(model.input_price),
            "output": price_per_million(model.output_price),
            "base_url": _base_url(request),
            "scope": SCOPE,
            "rate_pkr": settings.CREDITS_DEFAULT_RATE_PKR_PER_GPU_HOUR,
            "is_chat": model.task == ServedModel.Task.CHAT,
        },
    )


@login_required
def playground(request: HttpRequest) -> HttpResponse:
    """Chat with a model in the browser, paid from the person's own account or one of their
    organisations'. The page only renders; static/js/playground.js talks to the gateway's
    `POST /models/playground/chat` (session and CSRF token)."""
    models = list(models_for_person(user=request.user).filter(task=ServedModel.Task.CHAT))
    chosen = request.GET.get("model")
    return render(
        request,
        "models/playground.html",
        {
            "models": models,
            "chosen": chosen if any(model.name == chosen for model in models) else "",
            "organisations": payers_for_person(user=request.user),
            "is_student": is_student(user=request.user),
            "max_tokens": 256,
        },
    )
