#!/bin/sh
# The %test section of an Apptainer definition, run as that image's test job: the translation wrote
# it where Apptainer keeps it (/.singularity.d/test), so `apptainer test` and this job run the same.
exec /bin/sh /.singularity.d/test "$@"
