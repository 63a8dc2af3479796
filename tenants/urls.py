from django.urls import path

from tenants import views

urlpatterns = [path("", views.tenant_list, name="tenants")]
