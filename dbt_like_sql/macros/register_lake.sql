{#
    on-run-start (dbt_project.yml): open every lake source once per dbt session. The delta
    plugin registers a source as a view over a pyarrow dataset that lives only in the session
    that opened it, so a `dbt test` reading a staging view (built by an earlier session) needs
    its sources opened again; a run opens them before any model anyway.
#}
{% macro register_lake_sources() %}
    {%- if execute -%}
        {%- for node in graph.sources.values() if node.source_name == 'lake' -%}
            {%- do source(node.source_name, node.name) -%}
        {%- endfor -%}
    {%- endif -%}
    select 1
{% endmacro %}
