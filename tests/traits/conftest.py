from tests.rules.conftest import duck, spark, spark_session  # noqa: F401  (shared fixtures)
