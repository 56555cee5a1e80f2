-- 5-minute OHLCV bars rolled up from bars_1m (macros/rollup_bars.sql).
{{ rollup_bars('5m', 5 * 60 * 10**9) }}
