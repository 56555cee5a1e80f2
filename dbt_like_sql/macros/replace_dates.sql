{#
    The marts' incremental strategy (dbt_project.yml): delete the refreshed dates from the table,
    then insert the new rows of those dates (the model selects only them). A date that lost all
    its rows is emptied too, which a merge on keys would miss. Without `dates` every row is
    replaced: the same result as a full refresh.
#}
{% macro get_incremental_replace_dates_sql(arg_dict) %}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set source = arg_dict['temp_relation'] -%}
    {%- set columns = arg_dict['dest_columns'] | map(attribute='quoted') | join(', ') -%}
    delete from {{ target }} where {{ dates_predicate('date') }};
    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ source }}
{% endmacro %}
