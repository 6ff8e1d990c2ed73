// Package rules holds lending's pure arithmetic: repayment allocation, daily
// interest and penalty, the interest split, and the month cutoffs of close of
// business. It never touches the database; internal/lending and the
// close-of-business SQL implement the same rules, and tests compare them with
// these functions.
package rules
