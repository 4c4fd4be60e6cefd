package bench

import (
	"fmt"
	"io"
	"math"
	"strings"
)

// The plots are hand-written SVG: two kinds of line chart are all that is
// needed, and a plotting library would add a large dependency tree for it.

// Point is one (x, y) pair of a line.
type Point struct{ X, Y float64 }

// Line is one named series of a Chart.
type Line struct {
	Name   string
	Points []Point
}

// Chart is a line chart. With LogY the y axis is logarithmic (values ≤ 0
// are dropped); with Nines the x values are percentiles (0..100) drawn on a
// "number of nines" axis, as latency spectra are (HdrHistogram's plots).
type Chart struct {
	Title, XLabel, YLabel string
	LogY, Nines           bool
	Lines                 []Line
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// WriteSVG draws charts side by side, each w×h pixels.
func WriteSVG(out io.Writer, w, h int, charts ...Chart) error {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w*len(charts), h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	for i, c := range charts {
		c.draw(&b, float64(i*w), float64(w), float64(h))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(out, b.String())
	return err
}

// nines maps a percentile to its position on a nines axis: 0 → 0,
// 90 → 1, 99 → 2, 99.9 → 3.
func nines(q float64) float64 {
	if q >= 100 {
		return math.Inf(1)
	}
	return -math.Log10(1 - q/100)
}

func (c Chart) draw(b *strings.Builder, x0, w, h float64) {
	const left, right, top, bottom = 70.0, 20.0, 30.0, 45.0
	pw, ph := w-left-right, h-top-bottom
	tx := func(x float64) float64 { return x }
	ty := func(y float64) float64 { return y }
	if c.Nines {
		tx = nines
	}
	if c.LogY {
		ty = math.Log10
	}
	// Data bounds in transformed space. A percentile of 100 (the maximum)
	// is drawn half a nine past the last finite point.
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, l := range c.Lines {
		for _, p := range l.Points {
			if c.LogY && p.Y <= 0 {
				continue
			}
			if x := tx(p.X); !math.IsInf(x, 0) {
				xmin, xmax = math.Min(xmin, x), math.Max(xmax, x)
			}
			y := ty(p.Y)
			ymin, ymax = math.Min(ymin, y), math.Max(ymax, y)
		}
	}
	if math.IsInf(xmin, 0) {
		xmin, xmax, ymin, ymax = 0, 1, 0, 1
	}
	if c.Nines {
		xmin, xmax = 0, math.Ceil(xmax+0.5)
	}
	if c.LogY {
		ymin, ymax = math.Floor(ymin), math.Ceil(ymax)
	} else {
		ymin, ymax = 0, niceCeil(ymax)
	}
	if xmax <= xmin {
		xmax = xmin + 1
	}
	if ymax <= ymin {
		ymax = ymin + 1
	}
	sx := func(x float64) float64 {
		v := tx(x)
		if math.IsInf(v, 1) {
			v = xmax
		}
		return x0 + left + (v-xmin)/(xmax-xmin)*pw
	}
	sy := func(y float64) float64 { return top + ph - (ty(y)-ymin)/(ymax-ymin)*ph }

	fmt.Fprintf(b, `<text x="%.1f" y="18" text-anchor="middle" font-size="14">%s</text>`+"\n", x0+left+pw/2, esc(c.Title))
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#444"/>`+"\n", x0+left, top, pw, ph)
	// Y ticks.
	var yticks []float64
	if c.LogY {
		for e := ymin; e <= ymax; e++ {
			yticks = append(yticks, math.Pow(10, e))
		}
	} else {
		for i := 0; i <= 5; i++ {
			yticks = append(yticks, ymin+(ymax-ymin)*float64(i)/5)
		}
	}
	for _, y := range yticks {
		py := sy(y)
		fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, x0+left, x0+left+pw, py, py)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0+left-5, py+4, label(y))
	}
	// X ticks.
	var xticks []float64
	if c.Nines {
		for n := 0.0; n <= xmax; n++ {
			xticks = append(xticks, 100*(1-math.Pow(10, -n)))
		}
	} else {
		for i := 0; i <= 5; i++ {
			xticks = append(xticks, xmin+(xmax-xmin)*float64(i)/5)
		}
	}
	for _, x := range xticks {
		px := sx(x)
		fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, px, px, top, top+ph)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px, top+ph+15, label(x))
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x0+left+pw/2, h-8, esc(c.XLabel))
	fmt.Fprintf(b, `<text transform="translate(%.1f,%.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", x0+15, top+ph/2, esc(c.YLabel))
	for i, l := range c.Lines {
		color := palette[i%len(palette)]
		var pts []string
		for _, p := range l.Points {
			if c.LogY && p.Y <= 0 {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", sx(p.X), sy(p.Y)))
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", color, strings.Join(pts, " "))
		ly := top + 14 + float64(i)*15
		fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`, x0+left+8, x0+left+24, ly-4, ly-4, color)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", x0+left+28, ly, esc(l.Name))
	}
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func label(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case math.Abs(v) >= 1e4:
		return fmt.Sprintf("%gk", v/1e3)
	}
	return fmt.Sprintf("%g", math.Round(v*1000)/1000)
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// Plot draws a report: committed and aborted transactions per second over
// the run, and the latency spectrum of every outcome.
func (r Report) Plot(out io.Writer) error {
	tput := Chart{Title: "throughput", XLabel: "seconds", YLabel: "transactions/s"}
	var committed, aborted Line
	committed.Name, aborted.Name = "committed/s", "aborted/s"
	prev := 0.0
	for _, in := range r.Series {
		d := in.T - prev
		prev = in.T
		if d <= 0 {
			continue
		}
		committed.Points = append(committed.Points, Point{in.T, float64(in.Committed) / d})
		aborted.Points = append(aborted.Points, Point{in.T, float64(in.Aborted) / d})
	}
	tput.Lines = []Line{committed, aborted}
	lat := Chart{Title: "latency by percentile", XLabel: "percentile", YLabel: "ms", LogY: true, Nines: true}
	for _, name := range slotNames {
		l, ok := r.Latency[name]
		if !ok {
			continue
		}
		line := Line{Name: name}
		for _, q := range l.Spectrum {
			line.Points = append(line.Points, Point{q.Q, q.Ms})
		}
		lat.Lines = append(lat.Lines, line)
	}
	return WriteSVG(out, 520, 360, tput, lat)
}
