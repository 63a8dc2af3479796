from django.urls import path

from migrations_ui import views

urlpatterns = [path("", views.migration_list, name="migrations")]
