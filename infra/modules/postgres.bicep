// Azure Database for PostgreSQL flexible server: Label Studio's own database (users, projects, tasks,
// annotations, webhooks, storage connections). Label Studio's state lives here, never on the container's
// disk: SQLite on a container app's disk is lost with the replica, and SQLite on Azure Files has locking
// problems. The administrator password is a secure parameter, stored in Key Vault by keyvault.bicep.

param name string
param location string
param tags object = {}

@description('Administrator login; Label Studio connects as it (POSTGRE_USER).')
param administratorLogin string = 'labelstudio'
@secure()
@description('Administrator password (Key Vault secret label-studio-db-password; POSTGRE_PASSWORD).')
param postgresAdminPassword string

param databaseName string = 'labelstudio'

@description('Burstable B1ms (1 vCore, 2 GiB) is enough for a handful of labelers; a General Purpose SKU for more.')
param skuName string = 'Standard_B1ms'
param skuTier string = 'Burstable'
param serverVersion string = '16'
param storageSizeGB int = 32

@description('Log Analytics workspace the server\'s logs (PostgreSQLLogs, sessions, query store) go to.')
param logAnalyticsWorkspaceId string

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: name
  location: location
  tags: tags
  sku: { name: skuName, tier: skuTier }
  properties: {
    version: serverVersion
    administratorLogin: administratorLogin
    administratorLoginPassword: postgresAdminPassword
    authConfig: { passwordAuth: 'Enabled', activeDirectoryAuth: 'Disabled' }
    storage: { storageSizeGB: storageSizeGB, autoGrow: 'Enabled' }
    backup: { backupRetentionDays: 7, geoRedundantBackup: 'Disabled' }
    highAvailability: { mode: 'Disabled' }
    // Public endpoint, closed by the firewall except to Azure-hosted clients (rule below).
    network: { publicNetworkAccess: 'Enabled' }
  }
}

// TLS for every connection: the server refuses clear-text sessions (Label Studio connects with libpq's
// PGSSLMODE=require). On by default on flexible server; set here so that nobody turns it off unnoticed.
resource requireSecureTransport 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: server
  name: 'require_secure_transport'
  properties: { value: 'on', source: 'user-override' }
}

// Why 0.0.0.0: a Container Apps environment without its own virtual network has no fixed outbound address
// to allow, and the 0.0.0.0-0.0.0.0 rule is the service's "allow Azure services" switch: connections from
// Azure-hosted clients only (any tenant's), never from the internet at large. What then protects the
// database is the TLS-only transport above and the generated administrator password. A private network
// (VNet-integrated environment + delegated subnet + private DNS) would close the port entirely; it is not
// done here to keep the deployment small.
resource allowAzureServices 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = {
  parent: server
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: { startIpAddress: '0.0.0.0', endIpAddress: '0.0.0.0' }
  dependsOn: [requireSecureTransport] // the server takes one change at a time
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: server
  name: databaseName
  properties: { charset: 'UTF8', collation: 'en_US.utf8' }
  dependsOn: [allowAzureServices]
}

// The server's logs (connections, errors, authentication failures) and metrics.
resource serverLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: server
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'allLogs', enabled: true }
    ]
    metrics: [
      { category: 'AllMetrics', enabled: true }
    ]
  }
}

output host string = server.properties.fullyQualifiedDomainName
output databaseName string = database.name
output administratorLogin string = administratorLogin
