{#
    Generic data tests not shipped with dbt-core, with dbt_utils' names and arguments (the
    project installs no packages: it builds offline). Each returns the failing rows.
#}

{% test accepted_range(model, column_name, min_value=none, max_value=none, inclusive=true) %}
    {%- if min_value is none and max_value is none -%}
        {{ exceptions.raise_compiler_error("accepted_range on " ~ column_name ~ ": give min_value or max_value") }}
    {%- endif -%}
    select *
    from {{ model }}
    where {{ column_name }} is not null
        and (
            false
            {%- if min_value is not none %}
            or not ({{ column_name }} {{ '>=' if inclusive else '>' }} {{ min_value }})
            {%- endif %}
            {%- if max_value is not none %}
            or not ({{ column_name }} {{ '<=' if inclusive else '<' }} {{ max_value }})
            {%- endif %}
        )
{% endtest %}

{% test unique_combination_of_columns(model, combination_of_columns) %}
    select {{ combination_of_columns | join(', ') }}, count(*) as n
    from {{ model }}
    group by {{ combination_of_columns | join(', ') }}
    having count(*) > 1
{% endtest %}
