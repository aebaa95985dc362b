"""The user attributes of the trials this package writes, each named once (a job of the queue,
or a search trial), so that the queue, the searches and `status` read what the others wrote."""

JOB = "job"  # the job key a trial of the queue stands for
WORKER = "worker"  # who took the trial: `jobs.worker_id()`
WORKED = "worked"  # the job did work (it was not found done on disk)
ERROR = "error"  # why a job raised
FAIL_REASON = "fail_reason"  # why a search trial failed
TRIAL_DIR = "dir"  # where a search trial trained its model
SPEC = "spec"  # the model a search trial trained, in the notation
