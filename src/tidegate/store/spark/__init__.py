"""Apache Spark as the analytical engine (`backends.store: {type: spark}`).

`session` starts the one SparkSession of a process, `dialect` transpiles product SQL
from tidegate's dialect (DuckDB's) to Spark SQL, `warehouse` builds into Parquet tables
and keeps a DuckDB catalog of views on them. PySpark is the optional extra `spark`.
"""
