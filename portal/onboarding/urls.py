from django.urls import path

from . import views

app_name = "onboarding"

urlpatterns = [
    path("", views.start, name="start"),
    path("startup/", views.startup, name="startup"),
    path("student/", views.student, name="student"),
    path("student/home/", views.student_home, name="student_home"),
]
