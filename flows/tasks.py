"""The flow steps that run as Prefect tasks, each for what Prefect adds to it.

- ``fit`` and ``fit-maskrcnn`` (training) carry the tag ``training``: ``prefect
  concurrency-limit create training 1`` lets one training run at a time on a machine with
  one GPU, however many flows the schedules start.
- ``score-and-choose`` (scoring the pool under the champion, the longest step of a round)
  carries the tag ``scoring`` for the same reason.
- ``push-tasks`` retries: a push that failed half-way (Label Studio restarted after the
  client's own retries gave up) imports only the tasks still missing, so it is safe again.

None is cached (their inputs are the live registry and networks, and their effects are the
point); each shows in the Prefect UI as a task run of its flow, with its own state and time.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tomoloop.services import fit_maskrcnn, fit_semantic, push_round_tasks, score_and_choose

fit = task(fit_semantic, name="fit", tags=["training"], cache_policy=NO_CACHE)
fit_instances = task(fit_maskrcnn, name="fit-maskrcnn", tags=["training"], cache_policy=NO_CACHE)
score_choose = task(
    score_and_choose, name="score-and-choose", tags=["scoring"], cache_policy=NO_CACHE
)
push_tasks = task(
    push_round_tasks, name="push-tasks", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE
)
