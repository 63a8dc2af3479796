from django.urls import path

from monitors import views

urlpatterns = [path("", views.drill_list, name="drills")]
