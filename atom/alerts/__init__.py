"""atom/alerts: rules, their evaluation, and the channels alerts are announced on.

Modules, one concern each: ``spec`` (what a rule may say), ``validation`` (a rule document
checked, every problem listed), ``rules`` (create, change, delete, the built-ins), ``views``
(how the API shows rules and alerts), ``evaluation`` (the firing -> resolved lifecycle) and
``channels`` (webhook, Slack, email delivery).
"""
