-- 1-hour OHLCV bars rolled up from bars_1m (macros/rollup_bars.sql).
{{ rollup_bars('1h', 60 * 60 * 10**9) }}
