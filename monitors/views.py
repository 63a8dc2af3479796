from django.shortcuts import render

from console.models import Job, Target


def drill_list(request):
    jobs = Job.objects.filter(kind__startswith="drills.")[:50]
    scratch = Target.objects.filter(role=Target.Role.SCRATCH)
    return render(request, "monitors/drill_list.html", {"jobs": jobs, "scratch_targets": scratch})
