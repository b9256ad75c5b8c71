"""The test support layer, shared by the tests and the benchmarks (bench/ imports it; nothing
under tests/ imports bench). Import from the modules:

    tests.support.broker      Broker (a real mosquitto, by pid), Gate (a relay to cut), make_test_pki
    tests.support.gateway     GatewayProcess: `python -m punchgate.gateway run` as a child, by pid
                              run_punchgate: a one-off `python -m punchgate.gateway …`, to its end
    tests.support.config      write_config / gateway_config / zk_terminal: the daemon's TOML config
    tests.support.subscriber  Subscriber: a real MQTT client playing the central system
    tests.support.waiting     wait_for / wait_until (and *_async): poll a condition to a deadline
    tests.support.factories   make_punch / make_punches / interleaved: normalised punches
    tests.support.reconcile   Reconciler, buffer_rows, delivery_marks, where_it_stopped
    tests.support.zk          expected_ids / listening_for_punches of an emulated ZK terminal
    tests.support.zk_push     push_record_id / push_expected_ids of an emulated push terminal
    tests.support.schemas     validate(name, payload) against docs/schemas
    tests.support.measure     cpu_seconds / peak_rss_mb of a pid, percentile

The pytest fixtures built on them (broker, broker_factory, subscriber, subscriber_factory,
gateway_factory) are in tests/conftest.py.
"""
