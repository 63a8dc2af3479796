from django.shortcuts import render

from console.models import Job


def migration_list(request):
    jobs = Job.objects.filter(kind__startswith="migrations.")[:50]
    return render(request, "migrations_ui/migration_list.html", {"jobs": jobs})
