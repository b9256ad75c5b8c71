"""Remote commands over MQTT: central asks, the gateway answers (docs/mqtt-contract.md, "Remote
commands").

    catalogue  what each command is: its scope, whether it is allowed by default, destructive,
               safe to repeat after a crash, and what it needs of the driver
    settings   `[commands]`: the allow list and the limits
    intake     a request read, checked and accepted, or refused with a code and a sentence
    execute    what each command does, on a terminal (in its worker's task), the buffer or the gateway
    service    the service: intake, the buffer's idempotency and resumption, dispatch to the
               workers, expiry, answers, audit, /metrics
    service_intake   the service's intake: accepted in one commit, refused, or a repeat
    service_run      the service's dispatch and execution: worker, push command queue, or here
    service_resume   the service at start-up: what the buffer holds, resumed
    open_request     a request accepted and not finished yet, as the service keeps it
    routing          each terminal's kind, and what a driver cannot do
    audit_entries    the stored row and the accepted, refused and done audit entries
    command_metrics  the service's /metrics

The wire format is `punchgate.sync.command_contract`; the buffer's tables are
`punchgate.sync.command_store`; the one MQTT connection is the forwarder's.
"""
