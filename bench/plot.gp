# req/s per endpoint and target, from bench/run.sh's rps.dat:
#   gnuplot -e "datafile='rps.dat'; outfile='performance.png'; subtitle='...'" bench/plot.gp
# rps.dat: a header line, then one row per endpoint: a quoted label and the
# mean req/s of linegate, Lua, nginx->Node, Node, nginx static ("-": none).

if (!exists("datafile")) datafile = 'rps.dat'
if (!exists("outfile")) outfile = 'performance.png'
if (!exists("subtitle")) subtitle = ''

set terminal pngcairo size 1280,640 font "DejaVu Sans,11"
set output outfile
set title "linegate vs nginx static and the peers: requests per second (higher is better)\n{/*0.8 ".subtitle."}"
set datafile missing "-"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top right autotitle columnhead
set bmargin 4
set grid ytics
set ylabel "req/s"
set yrange [0:*]
set format y "%.0s%c"
set xtics nomirror font ",10"
set ytics nomirror

lbl(v) = v >= 10000 ? sprintf("%.0fk", v / 1000) : sprintf("%.1fk", v / 1000)

# a cluster of 5 bars and a gap of 1 bar: bar j of row r is at r + (j - 3) / 6
plot datafile using 2:xtic(1) lc rgb "#1f77b4", \
     '' using 3 lc rgb "#ff7f0e", \
     '' using 4 lc rgb "#2ca02c", \
     '' using 5 lc rgb "#9467bd", \
     '' using 6 lc rgb "#7f7f7f", \
     for [j=2:6] '' using ($0 + (j - 4) / 6.0):(column(j)):(lbl(column(j))) \
         with labels offset 0,0.7 font ",8" notitle
