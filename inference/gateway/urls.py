"""/llm/v1 (included by portal/urls.py at `llm/v1/`) and the playground's chat endpoint.

OpenAI clients append `/chat/completions` to a base URL: the routes answer with or without a
trailing slash (never a redirect, which a POST would not survive), and any other path under
/llm/v1 is an OpenAI-shaped 404.
"""

from django.urls import path, re_path

from . import views

app_name = "llm"

urlpatterns = [
    re_path(r"^models/?$", views.models_list, name="models"),
    re_path(r"^models/(?P<name>[A-Za-z0-9][A-Za-z0-9._:-]{0,99})/?$", views.model_detail),
    re_path(r"^chat/completions/?$", views.chat_completions, name="chat-completions"),
    re_path(r"^completions/?$", views.completions, name="completions"),
    re_path(r"^embeddings/?$", views.embeddings, name="embeddings"),
    re_path(r"^(?P<rest>.*)$", views.not_found),
]

playground_urlpatterns = [
    path("models/playground/chat", views.playground_chat, name="playground-chat"),
]
