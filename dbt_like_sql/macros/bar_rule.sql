{#- Generated from fluxforge/bar_rule.py (the one definition of a bar, see
    docs/data-guide.md "Bars"): edit the module, then write this file with
    `uv run python -m fluxforge.bar_rule`. -#}

{% macro bar_time() -%}
case when ts_event > 0 then ts_event else ts_recv end
{%- endmacro %}

{% macro trade_order() -%}
case when ts_event > 0 then ts_event else ts_recv end, ts_recv, seq, length(coalesce(trade_id, '')), coalesce(trade_id, ''), price
{%- endmacro %}

{% macro is_first_receipt() -%}
(trade_id is null or trade_id = '' or row_number() over (partition by exchange, symbol, date, trade_id order by ts_recv, seq, price, size) = 1)
{%- endmacro %}
