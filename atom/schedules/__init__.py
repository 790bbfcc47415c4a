"""Schedules: PostgreSQL is the record, RedBeat the alarm clock, the sweeper the safety net.

- A schedule is a 5-field ``cron`` in an IANA ``timezone`` (DST-aware, via croniter), or
  ``interval_seconds`` (sub-minute allowed) counted from the schedule's ``anchor``.
- Each enabled schedule has a RedBeat entry (``entry.ScheduleEntry``) that the API writes on
  every change, so the running beat follows without a restart. Beat sends ``fire`` with the
  *due time* of the slot, not the time it happened to run.
- ``fire`` records ``(schedule, fire_time)`` under a unique constraint before it starts
  anything: two beats, a redelivered message or a beat restarted at the wrong moment cannot
  start a fire twice.
- The sweeper (a maintenance task) walks every slot up to ``now - grace`` that has no
  record: a recent one is fired late (a beat that died between rescheduling and sending, a
  flushed Redis); an older one (downtime) is ``missed``, or run oldest first up to
  ``max_catchup`` when ``catchup`` is on. It also rebuilds missing RedBeat entries.

Modules, one concern each: ``timing`` (pure: when a schedule fires), ``entry`` (the RedBeat
entry), ``firing`` (fire and sweep, record then send), ``crud`` (the tenant's schedules and
how the API shows them).
"""
