#!/bin/sh
# The image's entrypoint: `docker run IMAGE train …` and `docker run IMAGE modelsvc train …` both run modelsvc (the
# second is what Kubernetes manifests and CronJobs usually spell out); an option first (`--help`) goes to modelsvc
# too. Any other program on PATH (sh, python, ray, prefect) runs as given, e.g. `docker run IMAGE ray start …`.
set -e
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ] || ! command -v "$1" >/dev/null 2>&1; then
  set -- modelsvc "$@"
fi
exec "$@"
