package mysql

// CheckVersion is checkVersion, for the tests.
var CheckVersion = checkVersion
