{#
    Post-hook of the marts: publish the refreshed dates of the model as Parquet under the
    profile's external_root (fluxforge/dbt_profile.py: {processed_dir}/models), for the reader
    (fluxforge/query.py) and for users outside dbt:

        {external_root}/{model}/date=D/exchange=E/symbol=S/data_0.parquet

    Each refreshed date directory is rewritten whole (OVERWRITE), so a date that lost rows or a
    symbol loses them in the files too; a run over every date rewrites the model's directory.
    Like the lake tables, the hive columns live in the directory names, not in the files.
    Profiles without an external_root (dbt-duckdb's default ".") publish nothing.
#}
{% macro publish_dates() %}
    {%- set root = adapter.external_root() -%}
    {%- if root in (none, '', '.') or not execute -%}
        {{ return('') }}
    {%- endif -%}
    {%- set target = root.rstrip('/') ~ '/' ~ this.identifier -%}
    {%- set dates = refresh_dates() -%}
    {%- set options = "format parquet, compression zstd, filename_pattern 'data_{i}'" -%}
    {%- if dates is none -%}
        copy (select * from {{ this }} order by all)
        to '{{ target }}' ({{ options }}, partition_by (date, exchange, symbol), overwrite);
    {%- else -%}
        {#- the model's directory must exist before a date directory is written inside it -#}
        copy (select * from {{ this }} limit 0)
        to '{{ target }}' ({{ options }}, partition_by (date), overwrite_or_ignore);
        {%- for d in dates %}
        copy (select * exclude (date) from {{ this }} where date = date '{{ d }}' order by all)
        to '{{ target }}/date={{ d }}' ({{ options }}, partition_by (exchange, symbol), overwrite);
        {%- endfor -%}
    {%- endif -%}
{% endmacro %}
